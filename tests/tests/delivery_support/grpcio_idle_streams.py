"""Python grpcio subscribers that open StreamAlerts(from_seq=1) and then stop
reading: the slow-consumer attack of issue #17 item 1, made by a standard
client so the agent's memory can be measured from outside the client.

usage: grpcio_idle_streams.py STUB_DIR TARGET CONNECTIONS STREAMS_PER_CONNECTION
Each stream reads its first alert (so the server has started sending), then
nothing. Prints `ready <n>` with the number of open streams, then waits until
stdin closes.
"""
import sys

sys.path.insert(0, sys.argv[1])

import grpc  # noqa: E402
from picket.v1 import alerts_pb2, alerts_pb2_grpc  # noqa: E402

target = sys.argv[2]
conns = int(sys.argv[3])
per_conn = int(sys.argv[4])
channels = []
streams = []
for _ in range(conns):
    # A private subchannel pool: one TCP/Unix connection per channel, as
    # separate clients would have.
    ch = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
    channels.append(ch)
    stub = alerts_pb2_grpc.AlertServiceStub(ch)
    for _ in range(per_conn):
        s = stub.StreamAlerts(alerts_pb2.StreamAlertsRequest(from_seq=1))
        first = next(s)
        assert first.HasField("alert") and first.alert.seq == 1, first
        streams.append(s)
print(f"ready {len(streams)}", flush=True)
sys.stdin.read()
for s in streams:
    s.cancel()
for ch in channels:
    ch.close()
