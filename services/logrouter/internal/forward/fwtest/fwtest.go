// Package fwtest writes Forward protocol messages the way Fluent Bit and
// fluentd do, for tests and benchmarks: entries with integer time,
// EventTime (fixext8 and ext8) or Fluent Bit 2.x's [[time, metadata],
// record] header, packed into PackedForward (bin or str) and
// CompressedPackedForward (one gzip member per group of entries). Records
// are encoded with github.com/vmihailenco/msgpack, not the logrouter's
// own decoder, so the two sides are independent.
package fwtest

import (
	"bytes"
	"compress/gzip"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// TimeForm is how an entry carries its time.
type TimeForm int

// Entry time forms.
const (
	IntTime       TimeForm = iota // integer seconds
	EventTimeFix                  // fixext8 type 0
	EventTimeExt8                 // ext8 len 8 type 0
	FluentBitV2                   // [[EventTime, {}], record]
)

// EventTime encodes t as the EventTime extension (fixext8 or ext8).
func EventTime(t time.Time, ext8 bool) []byte {
	var b []byte
	if ext8 {
		b = []byte{0xc7, 8, 0}
	} else {
		b = []byte{0xd7, 0}
	}
	b = binary.BigEndian.AppendUint32(b, uint32(t.Unix()))
	return binary.BigEndian.AppendUint32(b, uint32(t.Nanosecond()))
}

func mustMarshal(v any) []byte {
	b, err := msgpack.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// Entry encodes one [time, record] entry.
func Entry(t time.Time, rec map[string]any, form TimeForm) []byte {
	var b []byte
	switch form {
	case IntTime:
		b = append([]byte{0x92}, mustMarshal(t.Unix())...)
	case EventTimeFix:
		b = append([]byte{0x92}, EventTime(t, false)...)
	case EventTimeExt8:
		b = append([]byte{0x92}, EventTime(t, true)...)
	case FluentBitV2:
		b = []byte{0x92, 0x92}
		b = append(b, EventTime(t, false)...)
		b = append(b, 0x80) // empty metadata map
	}
	return append(b, mustMarshal(rec)...)
}

func appendOption(b []byte, chunk string, size int, compressed string) []byte {
	n := 0
	if chunk != "" {
		n++
	}
	if size > 0 {
		n++
	}
	if compressed != "" {
		n++
	}
	b = append(b, 0x80|byte(n))
	if size > 0 {
		b = append(b, mustMarshal("size")...)
		b = append(b, mustMarshal(size)...)
	}
	if chunk != "" {
		b = append(b, mustMarshal("chunk")...)
		b = append(b, mustMarshal(chunk)...)
	}
	if compressed != "" {
		b = append(b, mustMarshal("compressed")...)
		b = append(b, mustMarshal(compressed)...)
	}
	return b
}

func appendRaw(b []byte, payload []byte, bin bool) []byte {
	n := len(payload)
	if bin {
		b = append(b, 0xc6)
	} else {
		b = append(b, 0xdb)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(n))
	return append(b, payload...)
}

// PackedForward is [tag, entries-stream (bin or str), {size, chunk}].
func PackedForward(tag string, entries [][]byte, chunk string, bin bool) []byte {
	b := append([]byte{0x93}, mustMarshal(tag)...)
	b = appendRaw(b, bytes.Join(entries, nil), bin)
	return appendOption(b, chunk, len(entries), "")
}

// CompressedPackedForward is PackedForward with the stream gzipped as
// `members` concatenated gzip members (Fluent Bit appends one per chunk
// write) and option compressed: gzip.
func CompressedPackedForward(tag string, entries [][]byte, chunk string, members int) []byte {
	var z bytes.Buffer
	per := (len(entries) + members - 1) / max(members, 1)
	for i := 0; i < len(entries); i += max(per, 1) {
		w := gzip.NewWriter(&z)
		_, _ = w.Write(bytes.Join(entries[i:min(i+per, len(entries))], nil))
		_ = w.Close()
	}
	b := append([]byte{0x93}, mustMarshal(tag)...)
	b = appendRaw(b, z.Bytes(), true)
	return appendOption(b, chunk, len(entries), "gzip")
}

// Forward is [tag, [entries...], {chunk}].
func Forward(tag string, entries [][]byte, chunk string) []byte {
	b := append([]byte{0x93}, mustMarshal(tag)...)
	b = append(b, 0xdd)
	b = binary.BigEndian.AppendUint32(b, uint32(len(entries)))
	for _, e := range entries {
		b = append(b, e...)
	}
	return appendOption(b, chunk, 0, "")
}

// Message is [tag, time, record, {chunk}] with an EventTime.
func Message(tag string, t time.Time, rec map[string]any, chunk string) []byte {
	b := append([]byte{0x94}, mustMarshal(tag)...)
	b = append(b, EventTime(t, false)...)
	b = append(b, mustMarshal(rec)...)
	return appendOption(b, chunk, 0, "")
}

// AckReader reads {"ack": id} responses from one connection.
type AckReader struct{ d *msgpack.Decoder }

// NewAckReader reads acks from r.
func NewAckReader(r io.Reader) *AckReader { return &AckReader{d: msgpack.NewDecoder(r)} }

// Read reads the next ack.
func (a *AckReader) Read() (string, error) {
	var m map[string]string
	if err := a.d.Decode(&m); err != nil {
		return "", err
	}
	id, ok := m["ack"]
	if !ok {
		return "", fmt.Errorf("no ack in %v", m)
	}
	return id, nil
}

// Handshake performs the client side of HELO/PING/PONG on c (as
// fluentd's out_forward does) and returns the server's PONG verdict.
func Handshake(c io.ReadWriter, sharedKey, hostname, username, password string) (ok bool, reason string, err error) {
	d := msgpack.NewDecoder(c)
	var helo []any
	if err := d.Decode(&helo); err != nil {
		return false, "", fmt.Errorf("read HELO: %w", err)
	}
	if len(helo) != 2 || helo[0] != "HELO" {
		return false, "", fmt.Errorf("want HELO, got %v", helo)
	}
	opts, _ := helo[1].(map[string]any)
	nonce := asString(opts["nonce"])
	authSalt := asString(opts["auth"])
	salt := "client-salt-1234"
	digest := sha512Hex(salt, hostname, nonce, sharedKey)
	passDigest := ""
	if username != "" {
		passDigest = sha512Hex(authSalt, username, password)
	}
	ping := mustMarshal([]any{"PING", hostname, salt, digest, username, passDigest})
	if _, err := c.Write(ping); err != nil {
		return false, "", fmt.Errorf("send PING: %w", err)
	}
	var pong []any
	if err := d.Decode(&pong); err != nil {
		return false, "", fmt.Errorf("read PONG: %w", err)
	}
	if len(pong) != 5 || pong[0] != "PONG" {
		return false, "", fmt.Errorf("want PONG, got %v", pong)
	}
	ok, _ = pong[1].(bool)
	reason = asString(pong[2])
	if ok && asString(pong[4]) != sha512Hex(salt, asString(pong[3]), nonce, sharedKey) {
		return false, reason, fmt.Errorf("server digest mismatch")
	}
	return ok, reason, nil
}

func asString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []byte:
		return string(x)
	}
	return ""
}

func sha512Hex(parts ...string) string {
	h := sha512.New()
	for _, p := range parts {
		h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil))
}
