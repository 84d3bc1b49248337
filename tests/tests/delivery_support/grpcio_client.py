"""A plain Python grpcio client of the picket API, as a user would write it
(docs/delivery.md, "Python clients"): default channel options, the stubs
generated from proto/ by grpc_tools.protoc.

usage: grpcio_client.py STUB_DIR TARGET
prints one JSON object: peer identity, the first two alert seqs, ack result.
"""
import json
import sys

sys.path.insert(0, sys.argv[1])

import grpc  # noqa: E402
from picket.v1 import agent_pb2, agent_pb2_grpc, alerts_pb2, alerts_pb2_grpc  # noqa: E402

target = sys.argv[2]
with grpc.insecure_channel(target) as ch:
    info = agent_pb2_grpc.AgentServiceStub(ch).Info(agent_pb2.InfoRequest(), timeout=10)
    alerts = alerts_pb2_grpc.AlertServiceStub(ch)
    seqs = []
    stream = alerts.StreamAlerts(alerts_pb2.StreamAlertsRequest(from_seq=1), timeout=10)
    for item in stream:
        if item.HasField("alert"):
            seqs.append(item.alert.seq)
        if len(seqs) == 2:
            stream.cancel()
            break
    ack = alerts.Ack(alerts_pb2.AckRequest(subscriber="py", seq=2), timeout=10)
    print(json.dumps({"peer": info.peer_identity, "seqs": seqs, "acked": ack.acked_seq}))
