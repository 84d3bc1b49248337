"""An OTLP/gRPC log receiver built only from standard parts: Python grpcio's
server and the official generated OTLP stubs (PyPI `opentelemetry-proto`).

It is the collector side of tests/tests/delivery_python.rs: nothing in it
comes from Picket, so an export it accepts is one a real collector's gRPC
stack accepts too.

Usage: otlp_receiver.py FAIL_FIRST
Prints `port <n>` once listening on 127.0.0.1, then one JSON line per
accepted export request (protobuf JSON mapping, field names as in the proto).
The first FAIL_FIRST export calls are answered with UNAVAILABLE (a collector
that is restarting), so the exporter's retry path meets a real server.
"""

import sys
import threading
from concurrent import futures

import grpc
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1 import (
    logs_service_pb2,
    logs_service_pb2_grpc,
)


class Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, fail_first):
        self.fail_left = fail_first
        self.lock = threading.Lock()

    def Export(self, request, context):
        with self.lock:
            if self.fail_left > 0:
                self.fail_left -= 1
                print("refused", flush=True)
                context.abort(grpc.StatusCode.UNAVAILABLE, "collector restarting")
            doc = MessageToDict(request, preserving_proto_field_name=True)
            print("export " + __import__("json").dumps(doc), flush=True)
        return logs_service_pb2.ExportLogsServiceResponse()


def main():
    fail_first = int(sys.argv[1])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(fail_first), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"port {port}", flush=True)
    # Until the test closes stdin (or dies: the pipe closes then too).
    sys.stdin.read()
    server.stop(0)


if __name__ == "__main__":
    main()
