"""Herald's resource model: the PublishingTarget and DeadLetterReplay specs (one pydantic
model each, from which come their parsers, messages and the CRD schemas), the manifests the
CLI and the worker read from files, and the job submission of ``POST /v1/jobs``. Pure code:
no I/O beyond reading the files it is given.
"""
