"""Alert webhooks: subscriptions, Standard Webhooks signing, and the retrying dispatcher."""
