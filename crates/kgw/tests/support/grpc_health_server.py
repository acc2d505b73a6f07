"""A gRPC server with only the standard health service (grpcio-health-checking), for the
gRPC health check tests: `grpc_health_server.py ADDRESS:PORT SERVICE STATUS`. It prints
"ready" once it serves, then takes lines "SERVING" or "NOT_SERVING" on stdin to change what
it answers for SERVICE, and logs each Check to stderr ("check <service>"; stdout is closed by
the test once it read "ready")."""

import sys
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


class LoggingHealth(health.HealthServicer):
    def Check(self, request, context):
        print(f"check {request.service}", file=sys.stderr, flush=True)
        return super().Check(request, context)


def main():
    address, service, status = sys.argv[1], sys.argv[2], sys.argv[3]
    servicer = LoggingHealth()
    servicer.set(service, health_pb2.HealthCheckResponse.ServingStatus.Value(status))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(address)
    server.start()
    print("ready", flush=True)
    for line in sys.stdin:
        line = line.strip()
        if line:
            servicer.set(service, health_pb2.HealthCheckResponse.ServingStatus.Value(line))
            print(f"now {line}", file=sys.stderr, flush=True)
    server.stop(0)


if __name__ == "__main__":
    main()
