"""The one gRPC peer (grpcio, no generated code: messages are raw bytes, so no protoc step) for
the gateway's gRPC tests: a server, and clients that call through the gateway.

  grpc_peer.py server ADDRESS HEALTH [--name NAME] [--health-service S]
      ADDRESS is host:port (or a port, on 127.0.0.1). HEALTH (SERVING or NOT_SERVING) is what
      the standard health service answers for "", grpc.health.v1.Health, kgw.test.Echo and S.
      Prints "ready" once it serves; then each stdin line (SERVING, NOT_SERVING) changes that
      answer. Each health Check is logged to stderr ("check <service>"). With --name, any
      method it does not serve is a unary call answered "<NAME> <method path>".
  grpc_peer.py client HOST:PORT AUTHORITY  runs every Echo case through the gateway, prints JSON
  grpc_peer.py call HOST:PORT AUTHORITY METHOD PAYLOAD  one unary Echo call, prints its status
  grpc_peer.py calls HOST:PORT AUTHORITY "PATH [header=value]"...  one unary call per argument
      (b"hi"), prints each answer, or the status code of a failed call, one a line
  grpc_peer.py health HOST:PORT AUTHORITY STATUS  sets the server's health (via its own RPC)

Service kgw.test.Echo:
  Say    unary: echoes the bytes; b"deny" fails with PERMISSION_DENIED; trailing metadata
         x-trailer: kept-<n> where n is the request's length, initial metadata x-initial: yes
  Count  server streaming: b"5" gives 5 messages b"0".."4"
  Join   client streaming: the messages joined with b","
  Chat   bidi streaming: each message echoed upper-cased
  SetHealth unary: sets the health of every service name to the request's text
"""
import argparse
import json
import sys
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVICE = "kgw.test.Echo"


def identity(b):
    return b


class LoggingHealth(health.HealthServicer):
    """The standard health service, logging each Check so a test can see the checks come."""

    def Check(self, request, context):
        print(f"check {request.service}", file=sys.stderr, flush=True)
        return super().Check(request, context)


class AnswerAnyMethod(grpc.GenericRpcHandler):
    """Any method: a unary call answered "<name> <method path>" (which backend took the call)."""

    def __init__(self, name):
        self.name = name

    def service(self, details):
        answer = f"{self.name} {details.method}".encode()
        return grpc.unary_unary_rpc_method_handler(lambda request, context: answer)


def serve(address, status, name, health_service):
    if ":" not in address:
        address = "127.0.0.1:" + address
    health_servicer = LoggingHealth()
    names = ["", "grpc.health.v1.Health", SERVICE] + ([health_service] if health_service else [])

    def set_health(text):
        value = health_pb2.HealthCheckResponse.ServingStatus.Value(text)
        for n in names:
            health_servicer.set(n, value)

    set_health(status)

    def say(request, context):
        if request == b"deny":
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "denied by test")
        context.send_initial_metadata((("x-initial", "yes"),))
        context.set_trailing_metadata((("x-trailer", "kept-%d" % len(request)),))
        return request

    def count(request, context):
        for i in range(int(request)):
            yield str(i).encode()

    def join(request_iterator, context):
        return b",".join(request_iterator)

    def chat(request_iterator, context):
        for message in request_iterator:
            yield message.upper()

    def set_health_rpc(request, context):
        set_health(request.decode())
        return b"ok"

    handlers = {
        "Say": grpc.unary_unary_rpc_method_handler(say, identity, identity),
        "Count": grpc.unary_stream_rpc_method_handler(count, identity, identity),
        "Join": grpc.stream_unary_rpc_method_handler(join, identity, identity),
        "Chat": grpc.stream_stream_rpc_method_handler(chat, identity, identity),
        "SetHealth": grpc.unary_unary_rpc_method_handler(set_health_rpc, identity, identity),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if name:
        # After the services above: only what they do not serve comes here.
        server.add_generic_rpc_handlers((AnswerAnyMethod(name),))
    server.add_insecure_port(address)
    server.start()
    print("ready", flush=True)
    # A terminal's stdin is not read: run with `&` in a shell, reading it would stop the server.
    if sys.stdin is not None and not sys.stdin.isatty():
        for line in sys.stdin:
            line = line.strip()
            if line:
                set_health(line)
                print(f"now {line}", file=sys.stderr, flush=True)
    # stdin closed: serve until killed.
    server.wait_for_termination()


def channel(target, authority):
    return grpc.insecure_channel(target, options=(("grpc.default_authority", authority),))


def method(ch, kind, name):
    return getattr(ch, kind)("/%s/%s" % (SERVICE, name), request_serializer=identity,
                             response_deserializer=identity)


def run_client(target, authority):
    results = {}
    with channel(target, authority) as ch:
        say = method(ch, "unary_unary", "Say")
        reply, call = say.with_call(b"hello", timeout=10)
        results["unary"] = {
            "reply": reply.decode(),
            "code": call.code().name,
            "initial": dict(call.initial_metadata()).get("x-initial"),
            "trailer": dict(call.trailing_metadata()).get("x-trailer"),
        }
        try:
            say(b"deny", timeout=10)
            results["denied"] = {"code": "OK"}
        except grpc.RpcError as e:
            results["denied"] = {"code": e.code().name, "details": e.details()}
        count = method(ch, "unary_stream", "Count")
        results["server_streaming"] = [m.decode() for m in count(b"5", timeout=10)]
        join = method(ch, "stream_unary", "Join")
        results["client_streaming"] = join(iter([b"a", b"b", b"c"]), timeout=10).decode()
        chat = method(ch, "stream_stream", "Chat")
        results["bidi"] = [m.decode() for m in chat(iter([b"x", b"y"]), timeout=10)]
        big = b"z" * (1 << 20)
        results["large_unary_bytes"] = len(say(big, timeout=20))
    print(json.dumps(results), flush=True)


def run_call(target, authority, name, payload):
    """One unary call; prints {"code":..., "details":...} (for local replies)."""
    with channel(target, authority) as ch:
        try:
            method(ch, "unary_unary", name)(payload.encode(), timeout=10)
            print(json.dumps({"code": "OK"}))
        except grpc.RpcError as e:
            print(json.dumps({"code": e.code().name, "details": e.details()}))


def run_calls(target, authority, calls):
    """One unary call per "PATH [header=value]": prints the answer, or the failed call's code."""
    with channel(target, authority) as ch:
        for call in calls:
            path, _, header = call.partition(" ")
            metadata = [tuple(header.split("=", 1))] if header else []
            try:
                print(ch.unary_unary(path)(b"hi", metadata=metadata, timeout=10).decode(),
                      flush=True)
            except grpc.RpcError as e:
                print(e.code().name, flush=True)


def main():
    mode = sys.argv[1]
    if mode == "server":
        parser = argparse.ArgumentParser(prog="grpc_peer.py server")
        parser.add_argument("address")
        parser.add_argument("health")
        parser.add_argument("--name")
        parser.add_argument("--health-service")
        a = parser.parse_args(sys.argv[2:])
        serve(a.address, a.health, a.name, a.health_service)
    elif mode == "client":
        run_client(sys.argv[2], sys.argv[3])
    elif mode == "call":
        run_call(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5])
    elif mode == "calls":
        run_calls(sys.argv[2], sys.argv[3], sys.argv[4:])
    elif mode == "health":
        run_call(sys.argv[2], sys.argv[3], "SetHealth", sys.argv[4])
    else:
        sys.exit(f"grpc_peer.py: unknown mode {mode!r}; see the module docstring")


if __name__ == "__main__":
    main()
