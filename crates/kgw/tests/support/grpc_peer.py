"""A real gRPC server and client (grpcio) for the gateway's gRPC tests, without generated code:
messages are raw bytes, so no protoc step is needed.

  grpc_peer.py server PORT HEALTH        HEALTH: SERVING or NOT_SERVING, for every service name
  grpc_peer.py client HOST:PORT AUTHORITY  runs every case through the gateway, prints JSON
  grpc_peer.py health HOST:PORT AUTHORITY STATUS  sets the server's health (via its own RPC)

Service kgw.test.Echo:
  Say    unary: echoes the bytes; b"deny" fails with PERMISSION_DENIED; trailing metadata
         x-trailer: kept-<n> where n is the request's length, initial metadata x-initial: yes
  Count  server streaming: b"5" gives 5 messages b"0".."4"
  Join   client streaming: the messages joined with b","
  Chat   bidi streaming: each message echoed upper-cased
  SetHealth unary: sets the health of every service name to the request's text
"""
import json
import sys
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVICE = "kgw.test.Echo"


def identity(b):
    return b


def serve(port, status):
    health_servicer = health.HealthServicer()

    def set_health(text):
        value = health_pb2.HealthCheckResponse.ServingStatus.Value(text)
        for name in ("", "grpc.health.v1.Health", SERVICE):
            health_servicer.set(name, value)

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
    server.add_insecure_port("127.0.0.1:%d" % port)
    server.start()
    print("serving", flush=True)
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


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "server":
        serve(int(sys.argv[2]), sys.argv[3])
    elif mode == "client":
        run_client(sys.argv[2], sys.argv[3])
    elif mode == "call":
        run_call(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5])
    elif mode == "health":
        run_call(sys.argv[2], sys.argv[3], "SetHealth", sys.argv[4])
