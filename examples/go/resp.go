// A minimal Redis client: RESP2 over one TCP socket, enough for XADD, XREAD and XRANGE.
// Only the standard library, so the example builds without the module proxy.

package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// RedisError is an error reply ("-ERR ...") from the server.
type RedisError string

func (e RedisError) Error() string { return string(e) }

type Redis struct {
	conn net.Conn
	r    *bufio.Reader
}

// Dial connects to a redis://[user:password@]host:port/db URL.
func Dial(rawURL string) (*Redis, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "redis" {
		return nil, fmt.Errorf("only redis:// URLs are supported, got %q", rawURL)
	}
	host := u.Hostname()
	if host == "" {
		host = "127.0.0.1"
	}
	port := u.Port()
	if port == "" {
		port = "6379"
	}
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(host, port), 5*time.Second)
	if err != nil {
		return nil, err
	}
	c := &Redis{conn: conn, r: bufio.NewReader(conn)}
	if pass, ok := u.User.Password(); ok {
		args := []string{"AUTH", pass}
		if name := u.User.Username(); name != "" {
			args = []string{"AUTH", name, pass}
		}
		if _, err := c.Do(args...); err != nil {
			c.Close()
			return nil, err
		}
	}
	if db := strings.TrimPrefix(u.Path, "/"); db != "" && db != "0" {
		if _, err := c.Do("SELECT", db); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// Do sends one command and returns its reply: string, int64, nil, []interface{} or an error.
func (c *Redis) Do(args ...string) (interface{}, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	// Longer than any XREAD BLOCK we send, so a blocking read is not cut short.
	if err := c.conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		return nil, err
	}
	if _, err := io.WriteString(c.conn, b.String()); err != nil {
		return nil, err
	}
	return c.read()
}

func (c *Redis) read() (interface{}, error) {
	line, err := c.r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	if len(line) < 3 || !strings.HasSuffix(line, "\r\n") {
		return nil, fmt.Errorf("malformed RESP line %q", line)
	}
	kind, rest := line[0], line[1:len(line)-2]
	switch kind {
	case '+':
		return rest, nil
	case '-':
		return nil, RedisError(rest)
	case ':':
		return strconv.ParseInt(rest, 10, 64)
	case '$':
		n, err := strconv.Atoi(rest)
		if err != nil || n < 0 {
			return nil, err
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(c.r, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(rest)
		if err != nil || n < 0 {
			return nil, err
		}
		items := make([]interface{}, n)
		for i := range items {
			item, err := c.read()
			var redisErr RedisError
			if err != nil && !errors.As(err, &redisErr) {
				return nil, err
			}
			items[i] = item
		}
		return items, nil
	}
	return nil, fmt.Errorf("unexpected RESP reply %q", line)
}

func (c *Redis) Close() error { return c.conn.Close() }

// StreamEntry is one entry of XREAD/XRANGE: its id and its fields.
type StreamEntry struct {
	ID     string
	Fields map[string]string
}

// Entries decodes a list of [id, [field, value, ...]] replies.
func Entries(reply interface{}) []StreamEntry {
	list, _ := reply.([]interface{})
	out := make([]StreamEntry, 0, len(list))
	for _, raw := range list {
		pair, _ := raw.([]interface{})
		if len(pair) != 2 {
			continue
		}
		id, _ := pair[0].(string)
		flat, _ := pair[1].([]interface{})
		fields := map[string]string{}
		for i := 0; i+1 < len(flat); i += 2 {
			k, _ := flat[i].(string)
			v, _ := flat[i+1].(string)
			fields[k] = v
		}
		out = append(out, StreamEntry{ID: id, Fields: fields})
	}
	return out
}
