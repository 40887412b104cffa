"""Checkout: starting one, previewing its price, idempotency keys and their stores."""
