"""The inference server: ``neofleet serve`` speaks the Open Inference Protocol v2 (REST).

``source → settings → app → uvicorn``: ``source`` opens (or pulls and verifies) the bundle,
``settings`` resolves flags, environment and bundle into labels and limits, ``protocol``
(pure) decodes requests and encodes responses, ``batching`` (pure) packs and splits
batches, ``batcher`` runs them, ``service`` owns the model and its worker threads,
``status`` maps every error to its HTTP status, ``metrics`` owns the Prometheus registry,
``app`` holds the routes and ``run`` starts uvicorn and handles signals.

Metrics (``GET /metrics``; names and labels are a stable API). Every metric carries
``model``, ``revision``, ``pool``, ``target`` (fixed per process, from flags or
``NEOFLEET_MODEL_NAME/REVISION/POOL/TARGET``):

    name                                          type       extra labels   meaning
    neofleet_inference_request_duration_seconds   histogram  status         /infer, request to
                                                                            response (100 µs … 10 s)
    neofleet_inference_requests_total             counter    status         /infer requests answered
    neofleet_inference_errors_total               counter    reason         failed /infer requests
    neofleet_inference_queue_duration_seconds     histogram                 wait for a worker thread
                                                                            (or for the batch)
    neofleet_inference_batch_size                 histogram                 rows per batch run
                                                                            (only with --max-batch)
    neofleet_inflight_requests                    gauge                     /infer requests admitted
                                                                            and not yet answered
    neofleet_model_load_duration_seconds          gauge                     seconds to verify and
                                                                            load the bundle
    neofleet_model_info                           gauge      backend,       always 1: what this
                                                             bundle_digest  server runs

``status`` is one of ``ok``, ``client_error`` (4xx), ``overloaded`` (503, --max-queue
reached), ``unavailable`` (503, loading or shutting down), ``server_error`` (500).
``reason`` is one of ``InvalidInput``, ``InvalidRequest``, ``PayloadTooLarge``,
``ModelNotFound``, ``Overloaded``, ``NotReady``, ``InternalError``. No label ever holds a
request id or another value a client chooses.
"""
