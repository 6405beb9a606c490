package events

import "encoding/json"

// Marshal and Unmarshal are the JSON codec of events and API payloads:
// every event on the log, every create request and answer, the
// registry's and the agent's records. It is encoding/json unless the
// program installs a faster one with SetCodec: the services do, through
// package fastjson (goccy/go-json, the same JSON about 3 to 5 times
// faster); the bai CLI does not, to stay small and start fast.
func Marshal(v any) ([]byte, error) { return codec.marshal(v) }

// Unmarshal: see Marshal.
func Unmarshal(data []byte, v any) error { return codec.unmarshal(data, v) }

var codec = struct {
	marshal   func(any) ([]byte, error)
	unmarshal func([]byte, any) error
}{json.Marshal, json.Unmarshal}

// SetCodec installs marshal and unmarshal as the codec of Marshal and
// Unmarshal. They must read and write the same JSON as encoding/json. Call
// it only from an init function, before any use.
func SetCodec(marshal func(any) ([]byte, error), unmarshal func([]byte, any) error) {
	codec.marshal, codec.unmarshal = marshal, unmarshal
}
