"""Hash exchanges: fetching partners' hash lists into banks (docs/exchanges.md).

:mod:`tipline.exchange.api` is the interface and the registry of exchange types,
:mod:`tipline.exchange.types` the built-in types (``local_file``, ``http_list``),
:mod:`tipline.exchange.store` the configured exchanges in the service database (credentials
sealed with the media store's key), :mod:`tipline.exchange.fetcher` the durable fetcher (jobs
on the queue, batches committed with their checkpoint).
"""
