"""Signed HTTP callbacks: results POSTed to a producer's URL as the Standard Webhooks
specification describes, from an outbox table, as an alternative to reading the result stream.
See docs/webhooks.md."""
