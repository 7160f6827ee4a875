// A booking system in Go: publish one booking envelope to ticketrelay, compute its
// idempotency key, wait for its result on our own reply_to stream, print it.
// Exit 0 only when the result carries our key and the status is "issued" ("cancelled" with
// --cancel). See ../README.md.

package main

import (
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

const (
	bookingsStream = "ticketrelay:bookings"
	resultsPrefix  = "ticketrelay:results"
	// CONTRACT.md section 1: fixed forever.
	namespace = "6f1d7c52-3b0e-5a86-9d64-2c1f0e8a4b17"
)

func uuid5(ns, name string) string {
	nsBytes, err := hex.DecodeString(strings.ReplaceAll(ns, "-", ""))
	if err != nil || len(nsBytes) != 16 {
		panic("bad namespace UUID " + ns)
	}
	h := sha1.New()
	h.Write(nsBytes)
	h.Write([]byte(name))
	b := h.Sum(nil)[:16]
	b[6] = (b[6] & 0x0f) | 0x50 // version 5
	b[8] = (b[8] & 0x3f) | 0x80 // RFC 4122 variant
	x := hex.EncodeToString(b)
	return x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:]
}

func idempotencyKey(provider, account, messageID string, generation int) string {
	return uuid5(namespace, fmt.Sprintf("%s/%s/%s/%d", provider, account, messageID, generation))
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// examplesDir is where the shipped sample envelopes are (examples/), found from this
// source file when run with `go run`, else from the working directory.
func examplesDir() string {
	if dir := os.Getenv("TICKETRELAY_EXAMPLES_DIR"); dir != "" {
		return dir
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		if dir := filepath.Dir(filepath.Dir(file)); fileExists(filepath.Join(dir, "eguma.json")) {
			return dir
		}
	}
	return ".."
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func samplePayload(provider, messageID string) (map[string]interface{}, error) {
	// The provider's own request body; here the sample shipped beside this directory.
	text, err := os.ReadFile(filepath.Join(examplesDir(), provider+".json"))
	if err != nil {
		return nil, fmt.Errorf("no sample payload for provider %s: %w", provider, err)
	}
	var sample struct {
		Payload map[string]interface{} `json:"payload"`
	}
	if err := json.Unmarshal(text, &sample); err != nil {
		return nil, err
	}
	// RemyPass deduplicates on bookingId: it must be this booking's own id.
	if provider == "remypass" {
		sample.Payload["bookingId"] = "BK-" + messageID
	}
	return sample.Payload, nil
}

type options struct {
	redisURL, provider, account, messageID, replyTo, cancel string
	generation                                              int
	timeout                                                 time.Duration
	keyOnly                                                 bool
}

func buildEnvelope(o options, messageID, replyTo string) (map[string]interface{}, error) {
	envelope := map[string]interface{}{
		"version":    1,
		"message_id": messageID,
		"provider":   o.provider,
		"account":    o.account,
		"reply_to":   replyTo,
		"metadata":   map[string]string{"example": "go"},
	}
	if o.cancel != "" {
		// CONTRACT.md 1.1: a cancel is a message of its own, naming the booking it cancels.
		envelope["operation"] = "cancel"
		envelope["cancels"] = o.cancel
		return envelope, nil
	}
	payload, err := samplePayload(o.provider, messageID)
	if err != nil {
		return nil, err
	}
	envelope["payload"] = payload
	return envelope, nil
}

type result struct {
	MessageID      string            `json:"message_id"`
	IdempotencyKey string            `json:"idempotency_key"`
	Status         string            `json:"status"`
	Tickets        []json.RawMessage `json:"tickets"`
}

func waitForResult(c *Redis, stream, messageID string, timeout time.Duration) (string, *result, error) {
	deadline := time.Now().Add(timeout)
	last := "0" // our stream is new: read it from the start, so nothing is missed
	for time.Now().Before(deadline) {
		reply, err := c.Do("XREAD", "COUNT", "100", "BLOCK", "1000", "STREAMS", stream, last)
		if err != nil {
			return "", nil, err
		}
		streams, _ := reply.([]interface{})
		for _, s := range streams {
			pair, _ := s.([]interface{})
			if len(pair) != 2 {
				continue
			}
			for _, e := range Entries(pair[1]) {
				last = e.ID
				text, ok := e.Fields["result"]
				var r result
				if ok && json.Unmarshal([]byte(text), &r) == nil && r.MessageID == messageID {
					return text, &r, nil
				}
			}
		}
	}
	return "", nil, nil
}

func run(o options) int {
	messageID := o.messageID
	if messageID == "" {
		messageID = fmt.Sprintf("go-%d-%s", time.Now().UnixMilli(), randomHex(4))
	}
	if o.keyOnly {
		fmt.Println(idempotencyKey(o.provider, o.account, messageID, o.generation))
		return 0
	}
	key := idempotencyKey(o.provider, o.account, messageID, 0)
	replyTo := o.replyTo
	if replyTo == "" {
		replyTo = resultsPrefix + ":go-" + randomHex(6)
	}
	envelope, err := buildEnvelope(o, messageID, replyTo)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		return 1
	}
	fmt.Printf("message_id=%s\nidempotency_key=%s\nreply_to=%s\n", messageID, key, replyTo)

	c, err := Dial(o.redisURL)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error: cannot reach Redis:", err)
		return 1
	}
	defer c.Close()
	body, err := json.Marshal(envelope)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		return 1
	}
	entryID, err := c.Do("XADD", bookingsStream, "*", "message", string(body))
	if err != nil {
		fmt.Fprintln(os.Stderr, "error: XADD:", err)
		return 1
	}
	fmt.Printf("published=%v\n", entryID)
	text, r, err := waitForResult(c, replyTo, messageID, o.timeout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error: XREAD:", err)
		return 1
	}
	if r == nil {
		fmt.Fprintf(os.Stderr, "no result on %s within %s\n", replyTo, o.timeout)
		return 1
	}
	fmt.Printf("result=%s\n", text)
	wanted := "issued"
	if o.cancel != "" {
		wanted = "cancelled"
	}
	if r.IdempotencyKey != key {
		fmt.Fprintf(os.Stderr, "the result's idempotency_key %s is not ours (%s)\n", r.IdempotencyKey, key)
		return 1
	}
	if r.Status != wanted {
		fmt.Fprintf(os.Stderr, "status %s, not %s\n", r.Status, wanted)
		return 1
	}
	fmt.Printf("ok: %s, %d ticket(s)\n", r.Status, len(r.Tickets))
	return 0
}

func main() {
	var o options
	defaultURL := os.Getenv("REDIS_URL")
	if defaultURL == "" {
		defaultURL = "redis://127.0.0.1:6379/0"
	}
	flag.StringVar(&o.redisURL, "redis-url", defaultURL, "redis://host:port/db (default: $REDIS_URL)")
	flag.StringVar(&o.provider, "provider", "eguma", "remypass, fourvenues, fourvenues_channels or eguma")
	flag.StringVar(&o.account, "account", "default", "the provider account configured in ticketrelay")
	flag.StringVar(&o.messageID, "message-id", "", "this booking's message_id (default: random)")
	flag.StringVar(&o.replyTo, "reply-to", "", "results stream (default: ticketrelay:results:go-<random>)")
	flag.StringVar(&o.cancel, "cancel", "", "publish a cancel (CONTRACT.md 1.1) of this message_id instead")
	flag.IntVar(&o.generation, "generation", 0, "with --key-only: the generation")
	flag.BoolVar(&o.keyOnly, "key-only", false, "print the idempotency key and exit")
	timeoutS := flag.Float64("timeout", 60, "seconds to wait for the result")
	flag.Parse()
	o.timeout = time.Duration(*timeoutS * float64(time.Second))
	os.Exit(run(o))
}
