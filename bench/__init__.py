"""Benchmarks: chatmemory side by side with what users would pick instead, in one run.

``python -m bench [--quick] [--only redis,kafka,tidb,agent,async,checkpoint,operator] [--scale N]``
(``make bench``) reads the servers from the platform env file (``.platform/env``, or
``CHATMEMORY_PLATFORM_ENV``), measures each area in its own module and writes
``bench/results/latest.md``, ``bench/results/<timestamp>.json`` and ``bench/results/redis_read_curve.png``.

Not a test: nothing here asserts on time. Absolute times on shared machines are noise; the ratios
(chatmemory / peer, measured interleaved in one run) are the figures that count.

Modules: :mod:`bench.harness` (timing, statistics, round-trip counters, result rows),
:mod:`bench.env` (platform endpoints, unique names, versions), :mod:`bench.data` (the messages
every candidate writes), one module per area (``redis_``, ``kafka_``, ``tidb_``, ``agent``,
``async_``, ``checkpoint``, ``operator``), :mod:`bench.report` (markdown, JSON, plot).
"""
