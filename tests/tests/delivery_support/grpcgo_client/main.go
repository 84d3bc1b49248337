// A plain grpc-go client of the picket API over the Unix socket, with
// grpc-go's default dial options (docs/delivery.md, "Standard clients").
// It carries no generated stubs: messages are encoded and decoded by hand
// with the field numbers of proto/picket/v1, through a pass-through codec,
// so it builds offline from Debian's golang-google-grpc-dev alone.
//
// usage: grpcgo_client SOCKET_PATH
// prints one JSON object: peer identity, the first two alert seqs, ack result.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
)

// rawCodec hands []byte through unchanged: the messages are encoded here.
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

func varint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// field appends the key of field num with wire type wt.
func field(b []byte, num int, wt int) []byte { return varint(b, uint64(num<<3|wt)) }

func readVarint(b []byte) (uint64, int, error) {
	var v uint64
	for i := 0; i < len(b) && i < 10; i++ {
		v |= uint64(b[i]&0x7f) << (7 * uint(i))
		if b[i] < 0x80 {
			return v, i + 1, nil
		}
	}
	return 0, 0, fmt.Errorf("bad varint")
}

// fields splits a message into (number -> raw values): varints as their
// value, length-delimited as bytes.
func fields(b []byte) (map[int][]interface{}, error) {
	out := map[int][]interface{}{}
	for len(b) > 0 {
		key, n, err := readVarint(b)
		if err != nil {
			return nil, err
		}
		b = b[n:]
		num, wt := int(key>>3), int(key&7)
		switch wt {
		case 0:
			v, n, err := readVarint(b)
			if err != nil {
				return nil, err
			}
			out[num] = append(out[num], v)
			b = b[n:]
		case 2:
			l, n, err := readVarint(b)
			if err != nil || uint64(len(b)-n) < l {
				return nil, fmt.Errorf("bad length")
			}
			out[num] = append(out[num], b[n:n+int(l)])
			b = b[n+int(l):]
		case 1:
			b = b[8:]
		case 5:
			b = b[4:]
		default:
			return nil, fmt.Errorf("wire type %d", wt)
		}
	}
	return out, nil
}

func fail(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", a...)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 2 {
		fail("usage: grpcgo_client SOCKET_PATH")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := grpc.DialContext(ctx, "unix://"+os.Args[1], grpc.WithInsecure(), grpc.WithBlock(),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		fail("dial: %v", err)
	}
	defer conn.Close()

	// AgentService.Info: InfoResponse.peer_identity = 7.
	req := []byte{}
	var resp []byte
	if err := conn.Invoke(ctx, "/picket.v1.AgentService/Info", &req, &resp); err != nil {
		fail("Info: %v", err)
	}
	info, err := fields(resp)
	if err != nil || len(info[7]) != 1 {
		fail("InfoResponse: %v %v", err, info)
	}
	peer := string(info[7][0].([]byte))

	// AlertService.StreamAlerts(from_seq = 2: 1); StreamAlertsResponse.alert = 1,
	// Alert.seq = 1.
	sreq := varint(field(nil, 2, 0), 1)
	desc := &grpc.StreamDesc{StreamName: "StreamAlerts", ServerStreams: true}
	sctx, scancel := context.WithCancel(ctx)
	stream, err := conn.NewStream(sctx, desc, "/picket.v1.AlertService/StreamAlerts")
	if err != nil {
		fail("StreamAlerts: %v", err)
	}
	if err := stream.SendMsg(&sreq); err != nil {
		fail("StreamAlerts send: %v", err)
	}
	if err := stream.CloseSend(); err != nil {
		fail("StreamAlerts close: %v", err)
	}
	seqs := []uint64{}
	for len(seqs) < 2 {
		var item []byte
		if err := stream.RecvMsg(&item); err != nil {
			fail("StreamAlerts recv: %v", err)
		}
		f, err := fields(item)
		if err != nil {
			fail("StreamAlertsResponse: %v", err)
		}
		for _, a := range f[1] {
			af, err := fields(a.([]byte))
			if err != nil || len(af[1]) != 1 {
				fail("Alert: %v %v", err, af)
			}
			seqs = append(seqs, af[1][0].(uint64))
		}
	}
	scancel()

	// AlertService.Ack(subscriber = 1: "go", seq = 2: 2); AckResponse.acked_seq = 1.
	areq := field(nil, 1, 2)
	areq = varint(areq, 2)
	areq = append(areq, "go"...)
	areq = varint(field(areq, 2, 0), 2)
	var aresp []byte
	if err := conn.Invoke(ctx, "/picket.v1.AlertService/Ack", &areq, &aresp); err != nil {
		fail("Ack: %v", err)
	}
	ack, err := fields(aresp)
	if err != nil || len(ack[1]) != 1 {
		fail("AckResponse: %v %v", err, ack)
	}
	out, _ := json.Marshal(map[string]interface{}{"peer": peer, "seqs": seqs, "acked": ack[1][0]})
	fmt.Println(string(out))
}
