<?php
// Receive ticketrelay results by HTTP: verify the Standard Webhooks signature, then use them.
// PHP standard library only (hash_hmac, hash_equals). Try it with the built-in server:
//
//     WEBHOOK_SECRET=whsec_... php -S 127.0.0.1:8080 verify.php
//
// or call verify_webhook() in your own endpoint with the RAW body (file_get_contents of
// php://input, before any json_decode) and the webhook-* request headers.

const TOLERANCE_S = 300;

function verify_webhook(string $secret, array $headers, string $body, ?int $now = null): void
{
    $headers = array_change_key_case($headers, CASE_LOWER);
    $id = $headers['webhook-id'] ?? '';
    $stamp = $headers['webhook-timestamp'] ?? '';
    $signatures = $headers['webhook-signature'] ?? '';
    if ($id === '' || $stamp === '' || $signatures === '') {
        throw new RuntimeException('missing webhook-id, webhook-timestamp or webhook-signature');
    }
    if (!ctype_digit($stamp) || abs(($now ?? time()) - (int) $stamp) > TOLERANCE_S) {
        throw new RuntimeException('timestamp missing or more than 5 minutes away');
    }
    $key = base64_decode(str_starts_with($secret, 'whsec_') ? substr($secret, 6) : $secret);
    $expected = base64_encode(hash_hmac('sha256', "$id.$stamp.$body", $key, true));
    // Several signatures, space-separated, while ticketrelay rotates its secret: any one will do.
    foreach (explode(' ', $signatures) as $entry) {
        $parts = explode(',', $entry, 2);
        if (count($parts) === 2 && $parts[0] === 'v1' && hash_equals($expected, $parts[1])) {
            return;
        }
    }
    throw new RuntimeException('no matching signature');
}

if (PHP_SAPI === 'cli-server') {
    $body = file_get_contents('php://input');
    $headers = [
        'webhook-id' => $_SERVER['HTTP_WEBHOOK_ID'] ?? '',
        'webhook-timestamp' => $_SERVER['HTTP_WEBHOOK_TIMESTAMP'] ?? '',
        'webhook-signature' => $_SERVER['HTTP_WEBHOOK_SIGNATURE'] ?? '',
    ];
    try {
        verify_webhook(getenv('WEBHOOK_SECRET') ?: '', $headers, $body);
    } catch (RuntimeException $e) {
        http_response_code(400);
        echo $e->getMessage();
        return;
    }
    $result = json_decode($body, true);
    // Keep, per idempotency_key, the result with the highest revision; deduplicate on webhook-id.
    file_put_contents('php://stderr', sprintf(
        "verified %s %s %d %s\n",
        $headers['webhook-id'], $result['idempotency_key'], $result['revision'], $result['status']
    ));
    http_response_code(204); // ticketrelay stops retrying on any 2xx
}
