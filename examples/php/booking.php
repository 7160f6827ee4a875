<?php
// A booking system in PHP: publish one booking envelope to ticketrelay, compute its
// idempotency key, wait for its result on our own reply_to stream, print it.
// Exit 0 only when the result carries our key and the status is "issued" ("cancelled" with
// --cancel). See ../README.md.

declare(strict_types=1);

require __DIR__ . '/resp.php';

const BOOKINGS_STREAM = 'ticketrelay:bookings';
const RESULTS_PREFIX = 'ticketrelay:results';
// CONTRACT.md section 1: fixed forever.
const NAMESPACE_UUID = '6f1d7c52-3b0e-5a86-9d64-2c1f0e8a4b17';

function uuid5(string $namespace, string $name): string
{
    $hash = sha1(hex2bin(str_replace('-', '', $namespace)) . $name, true);
    $b = substr($hash, 0, 16);
    $b[6] = chr((ord($b[6]) & 0x0f) | 0x50); // version 5
    $b[8] = chr((ord($b[8]) & 0x3f) | 0x80); // RFC 4122 variant
    $hex = bin2hex($b);
    return substr($hex, 0, 8) . '-' . substr($hex, 8, 4) . '-' . substr($hex, 12, 4) . '-'
        . substr($hex, 16, 4) . '-' . substr($hex, 20);
}

function idempotency_key(string $provider, string $account, string $messageId, int $generation = 0): string
{
    return uuid5(NAMESPACE_UUID, "$provider/$account/$messageId/$generation");
}

function sample_payload(string $provider, string $messageId): stdClass
{
    // The provider's own request body; here the sample shipped beside this directory.
    // Decoded as objects, not arrays, so that `{}` stays `{}` when encoded again.
    $file = dirname(__DIR__) . "/$provider.json";
    $text = @file_get_contents($file);
    if ($text === false) {
        throw new InvalidArgumentException("no sample payload for provider $provider ($file)");
    }
    $payload = json_decode($text, false, 512, JSON_THROW_ON_ERROR)->payload;
    // RemyPass deduplicates on bookingId: it must be this booking's own id.
    if ($provider === 'remypass') {
        $payload->bookingId = "BK-$messageId";
    }
    return $payload;
}

function build_envelope(array $opts, string $messageId, string $replyTo): array
{
    $envelope = [
        'version' => 1,
        'message_id' => $messageId,
        'provider' => $opts['provider'],
        'account' => $opts['account'],
        'reply_to' => $replyTo,
        'metadata' => ['example' => 'php'],
    ];
    if ($opts['cancel'] !== null) {
        // CONTRACT.md 1.1: a cancel is a message of its own, naming the booking it cancels.
        $envelope['operation'] = 'cancel';
        $envelope['cancels'] = $opts['cancel'];
    } else {
        $envelope['payload'] = sample_payload($opts['provider'], $messageId);
    }
    return $envelope;
}

/** @return array{0: ?string, 1: ?array} the result's JSON text and its decoded form */
function wait_for_result(Resp $redis, string $stream, string $messageId, float $timeoutS): array
{
    $deadline = microtime(true) + $timeoutS;
    $last = '0'; // our stream is new: read it from the start, so nothing is missed
    while (microtime(true) < $deadline) {
        $reply = $redis->call('XREAD', 'COUNT', '100', 'BLOCK', '1000', 'STREAMS', $stream, $last);
        foreach ($reply ?? [] as [, $entries]) {
            foreach ($entries as [$id, $flat]) {
                $last = $id;
                $text = resp_fields($flat)['result'] ?? null;
                $result = $text !== null ? json_decode($text, true) : null;
                if (is_array($result) && ($result['message_id'] ?? null) === $messageId) {
                    return [$text, $result];
                }
            }
        }
    }
    return [null, null];
}

const USAGE = <<<'TXT'
usage: php booking.php [--redis-url URL] [--provider eguma] [--account default]
       [--message-id ID] [--reply-to STREAM] [--timeout 60] [--cancel MESSAGE_ID]
       [--key-only [--generation N]]
REDIS_URL (redis://host:port/db) is read from the environment when --redis-url is not given.
TXT;

function options(array $argv): ?array
{
    $names = ['redis-url', 'provider', 'account', 'message-id', 'generation', 'reply-to', 'timeout', 'cancel'];
    $opts = [
        'redis-url' => getenv('REDIS_URL') ?: 'redis://127.0.0.1:6379/0',
        'provider' => 'eguma',
        'account' => 'default',
        'message-id' => null,
        'generation' => '0',
        'reply-to' => null,
        'timeout' => '60',
        'cancel' => null,
        'key-only' => false,
        'help' => false,
    ];
    // By hand rather than getopt(), which ignores unknown options silently.
    for ($i = 1; $i < count($argv); $i++) {
        $arg = $argv[$i];
        if ($arg === '--key-only' || $arg === '--help' || $arg === '-h') {
            $opts[$arg === '--key-only' ? 'key-only' : 'help'] = true;
            continue;
        }
        [$name, $value] = array_pad(explode('=', $arg, 2), 2, null);
        $name = substr($name, 2);
        if (strncmp($arg, '--', 2) !== 0 || !in_array($name, $names, true)) {
            fwrite(STDERR, "unknown option $arg\n");
            return null;
        }
        if ($value === null) {
            if (!isset($argv[$i + 1])) {
                fwrite(STDERR, "option --$name needs a value\n");
                return null;
            }
            $value = $argv[++$i];
        }
        $opts[$name] = $value;
    }
    return $opts;
}

function main(array $argv): int
{
    $opts = options($argv);
    if ($opts === null) {
        fwrite(STDERR, USAGE . "\n");
        return 2;
    }
    if ($opts['help']) {
        echo USAGE, "\n";
        return 0;
    }
    $messageId = $opts['message-id'] ?? sprintf('php-%d-%s', (int)(microtime(true) * 1000), bin2hex(random_bytes(4)));
    if ($opts['key-only']) {
        echo idempotency_key($opts['provider'], $opts['account'], $messageId, (int)$opts['generation']), "\n";
        return 0;
    }
    $key = idempotency_key($opts['provider'], $opts['account'], $messageId, 0);
    $replyTo = $opts['reply-to'] ?? RESULTS_PREFIX . ':php-' . bin2hex(random_bytes(6));
    $envelope = build_envelope($opts, $messageId, $replyTo);
    echo "message_id=$messageId\n", "idempotency_key=$key\n", "reply_to=$replyTo\n";

    $redis = Resp::connect($opts['redis-url']);
    try {
        $json = json_encode($envelope, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_THROW_ON_ERROR);
        $entryId = $redis->call('XADD', BOOKINGS_STREAM, '*', 'message', $json);
        echo "published=$entryId\n";
        [$text, $result] = wait_for_result($redis, $replyTo, $messageId, (float)$opts['timeout']);
        if ($result === null) {
            fwrite(STDERR, "no result on $replyTo within {$opts['timeout']}s\n");
            return 1;
        }
        echo "result=$text\n";
        $wanted = $opts['cancel'] !== null ? 'cancelled' : 'issued';
        if (($result['idempotency_key'] ?? null) !== $key) {
            fwrite(STDERR, "the result's idempotency_key {$result['idempotency_key']} is not ours ($key)\n");
            return 1;
        }
        if (($result['status'] ?? null) !== $wanted) {
            fwrite(STDERR, "status {$result['status']}, not $wanted\n");
            return 1;
        }
        printf("ok: %s, %d ticket(s)\n", $result['status'], count($result['tickets'] ?? []));
        return 0;
    } finally {
        $redis->close();
    }
}

try {
    exit(main($argv));
} catch (Throwable $e) {
    fwrite(STDERR, 'error: ' . $e->getMessage() . "\n");
    exit(1);
}
