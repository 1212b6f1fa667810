"""Delivery: the publishing target types (rendering a job into an HTTP request), signing,
the egress policy, the HTTP client and what each failure means. Knows nothing of the queue
(PostgreSQL) or of the processes that use it.
"""
