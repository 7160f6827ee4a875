<?php
// A minimal Redis client: RESP2 over one TCP socket, enough for XADD, XREAD and XRANGE.
// Only PHP's standard streams, so the example needs no Composer package and no extension.

declare(strict_types=1);

final class RedisError extends RuntimeException {}

final class Resp
{
    /** @var resource */
    private $sock;

    private function __construct($sock)
    {
        $this->sock = $sock;
    }

    public static function connect(string $url): self
    {
        $u = parse_url($url);
        if ($u === false || ($u['scheme'] ?? '') !== 'redis') {
            throw new InvalidArgumentException("only redis:// URLs are supported, got $url");
        }
        $host = $u['host'] ?? '127.0.0.1';
        $port = (int)($u['port'] ?? 6379);
        $sock = @stream_socket_client("tcp://$host:$port", $errno, $errstr, 5.0);
        if ($sock === false) {
            throw new RuntimeException("cannot connect to Redis at $host:$port: $errstr");
        }
        // Longer than any XREAD BLOCK we send, so a blocking read is not cut short.
        stream_set_timeout($sock, 30);
        $client = new self($sock);
        if (isset($u['pass'])) {
            $user = rawurldecode($u['user'] ?? '');
            $pass = rawurldecode($u['pass']);
            $client->call(...($user !== '' ? ['AUTH', $user, $pass] : ['AUTH', $pass]));
        }
        $db = (int)ltrim($u['path'] ?? '/0', '/');
        if ($db !== 0) {
            $client->call('SELECT', (string)$db);
        }
        return $client;
    }

    /** @return mixed the reply: string, int, null or a list of replies */
    public function call(string ...$args)
    {
        $out = '*' . count($args) . "\r\n";
        foreach ($args as $arg) {
            $out .= '$' . strlen($arg) . "\r\n" . $arg . "\r\n";
        }
        for ($sent = 0; $sent < strlen($out); $sent += $n) {
            $n = fwrite($this->sock, substr($out, $sent));
            if ($n === false || $n === 0) {
                throw new RuntimeException('write to Redis failed');
            }
        }
        return $this->read();
    }

    /** @return mixed */
    private function read()
    {
        $line = fgets($this->sock);
        if ($line === false) {
            throw new RuntimeException('connection to Redis closed or timed out');
        }
        $type = $line[0];
        $rest = substr($line, 1, -2);
        switch ($type) {
            case '+':
                return $rest;
            case '-':
                throw new RedisError($rest);
            case ':':
                return (int)$rest;
            case '$':
                $len = (int)$rest;
                if ($len < 0) {
                    return null;
                }
                $data = '';
                while (strlen($data) < $len + 2) {
                    $chunk = fread($this->sock, $len + 2 - strlen($data));
                    if ($chunk === false || $chunk === '') {
                        throw new RuntimeException('connection to Redis closed mid-reply');
                    }
                    $data .= $chunk;
                }
                return substr($data, 0, $len);
            case '*':
                $count = (int)$rest;
                if ($count < 0) {
                    return null;
                }
                $items = [];
                for ($i = 0; $i < $count; $i++) {
                    $items[] = $this->read();
                }
                return $items;
        }
        throw new RuntimeException('unexpected RESP reply: ' . json_encode($line));
    }

    public function close(): void
    {
        fclose($this->sock);
    }
}

/** XRANGE/XREAD entries come as [id, [field, value, field, value, ...]]. */
function resp_fields(array $flat): array
{
    $out = [];
    for ($i = 0; $i + 1 < count($flat); $i += 2) {
        $out[$flat[$i]] = $flat[$i + 1];
    }
    return $out;
}
