"""The Celery app and its configuration. The app names the tasks module in `include`, so the
worker package never imports `tasks` (dependencies point one way)."""

from __future__ import annotations

import logging
import os
import threading
import time

from celery import Celery
from celery.schedules import crontab
from celery.signals import heartbeat_sent, worker_ready, worker_shutting_down
from celery.signals import setup_logging as celery_setup_logging

from worker import kombu_patches, redis_clients
from worker.heartbeat import Heartbeat
from worker.logs import setup_logging
from worker.settings import Settings, get_settings
from worker.webhooks.schedule import beat_entries as webhooks_beat_entries

ISSUE_TASK = "ticketrelay.issue"
ISSUE_BATCH_TASK = "ticketrelay.issue_batch"
SWEEP_TASK = "ticketrelay.sweep"
REISSUE_TASK = "ticketrelay.reissue_nightly"
RETENTION_TASK = "ticketrelay.retention"


def _schedule(s: Settings) -> dict[str, dict[str, object]]:
    schedule: dict[str, dict[str, object]] = {
        "sweep": {
            "task": SWEEP_TASK,
            "schedule": s.sweep_interval_s,
            "options": {"expires": s.sweep_interval_s},
        },
        **webhooks_beat_entries(s),
    }
    if s.retention_interval_s > 0:
        # Personal data past its retention (worker/retention.py, docs/data-protection.md).
        schedule["retention"] = {
            "task": RETENTION_TASK,
            "schedule": s.retention_interval_s,
            "options": {"expires": s.retention_interval_s},
        }
    if s.reissue_schedule.strip().lower() not in ("", "off", "none", "false"):
        fields = s.reissue_schedule.split()
        if len(fields) != 5:
            raise ValueError("TICKETRELAY_REISSUE_SCHEDULE must be a 5-field cron expression or 'off'")
        minute, hour, day_of_month, month_of_year, day_of_week = fields
        schedule["reissue-nightly"] = {
            "task": REISSUE_TASK,
            "schedule": crontab(
                minute=minute,
                hour=hour,
                day_of_month=day_of_month,
                month_of_year=month_of_year,
                day_of_week=day_of_week,
            ),
        }
    return schedule


kombu_patches.apply()


def make_app(settings: Settings | None = None) -> Celery:
    s = settings or get_settings()
    if s.max_countdown_s >= s.visibility_timeout_s:
        # A countdown longer than the visibility timeout makes Redis redeliver the waiting
        # task and run it again (measured: 4 runs). Refuse to start instead.
        raise ValueError("TICKETRELAY_MAX_COUNTDOWN_S must be below TICKETRELAY_VISIBILITY_TIMEOUT_S")
    app = Celery("ticketrelay", include=["tasks"])
    app.conf.update(
        broker_url=s.redis_url,
        # rediss://: verify the server against TICKETRELAY_REDIS_TLS_CA_FILE (or the system CAs).
        broker_use_ssl=redis_clients.celery_broker_ssl(s),
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_transport_options={
            "visibility_timeout": s.visibility_timeout_s,
            # kombu's defaults bring a killed worker's message back only after ~100 s more.
            "unacked_restore_interval": 1,
            "unacked_restore_throttle": 1,
            # The timeouts every Redis client of ticketrelay has (worker.redis_clients).
            **redis_clients.celery_transport_options(),
        },
        task_ignore_result=True,  # results travel on our own stream, not a backend
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=s.queue,
        worker_pool="worker.pool:ThreadTaskPool" if s.worker_pool == "threads" else s.worker_pool,
        worker_concurrency=s.worker_concurrency,
        task_time_limit=s.task_time_limit_s,
        # Task events feed Flower. The extra "task-sent" event doubled the cost of a publish in
        # intake (measured: 19 % of intake's time) and Flower lists tasks without it.
        worker_send_task_events=True,
        task_send_sent_event=False,
        worker_soft_shutdown_timeout=s.soft_shutdown_timeout_s,
        worker_enable_soft_shutdown_on_idle=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        beat_schedule=_schedule(s),
        timezone="UTC",
        enable_utc=True,
    )
    return app


app = make_app()


def enqueue_issue(key: str, countdown: float | None = None, bulk: bool = False) -> None:
    """Send the claim-check task: it carries only the idempotency key, nothing personal. Bulk
    re-issuance travels on its own queue, so live bookings never wait behind a night's run."""
    s = get_settings()
    app.send_task(
        ISSUE_TASK,
        args=[key],
        kwargs={"bulk": True} if bulk else {},
        argsrepr=repr((key,)),
        kwargsrepr="{'bulk': True}" if bulk else "{}",
        countdown=countdown,
        queue=s.bulk_queue if bulk else s.queue,
    )


def enqueue_issue_many(keys: list[str], countdown: float | None = None, bulk: bool = False) -> None:
    """Send keys in tasks of up to `task_batch` keys each (one key: the plain issue task)."""
    s = get_settings()
    size = s.task_batch
    for i in range(0, len(keys), size):
        chunk = keys[i : i + size]
        if len(chunk) == 1:
            enqueue_issue(chunk[0], countdown=countdown, bulk=bulk)
            continue
        app.send_task(
            ISSUE_BATCH_TASK,
            args=[chunk],
            kwargs={"bulk": True} if bulk else {},
            argsrepr=repr((chunk,)),  # keys only: Flower lists them, nothing personal
            kwargsrepr="{'bulk': True}" if bulk else "{}",
            countdown=countdown,
            queue=s.bulk_queue if bulk else s.queue,
        )


@celery_setup_logging.connect
def _use_our_logging(**_kwargs: object) -> None:
    # Connecting this signal stops Celery from configuring logging itself: JSON lines instead.
    setup_logging()


_worker_heartbeat = Heartbeat("worker", every_s=1.0)


@heartbeat_sent.connect
def _touch_heartbeat(**_kwargs: object) -> None:
    # Sent every 2 s by the consumer over the broker connection: proof that the worker's event
    # loop runs and Redis answers.
    _worker_heartbeat.beat()


@worker_ready.connect
def _check_connection_budget(**_kwargs: object) -> None:
    from worker import db, db_budget

    settings = get_settings()
    db_budget.check_in_background(db.get_engine(), db.pool_options(settings))


@worker_shutting_down.connect
def _on_shutdown(how: str = "", **_kwargs: object) -> None:
    _worker_heartbeat.clear()  # not ready while draining
    from worker import db

    db.stop_waiting()  # threads waiting for a refused connection give up: the process is ending
    if how != "Cold":
        return  # a warm shutdown (plain SIGTERM without REMAP_SIGTERM) waits as Celery says
    # With the thread pool, Celery's cold shutdown still waits for running threads, so a hung
    # provider call would hold the process past any grace period. After the soft shutdown
    # (unfinished messages are restored to the queue by then) the process ends itself; a call
    # cut off here is in doubt, and the lease plus the stable key make its re-run safe.
    # worker_shutting_down is sent after the soft shutdown wait: give the consumer a few
    # seconds to restore unacknowledged messages, then end.
    limit = 3.0
    threading.Thread(target=_exit_after, args=(limit,), daemon=True, name="shutdown-watchdog").start()


def _exit_after(seconds: float) -> None:
    time.sleep(seconds)
    logging.getLogger("ticketrelay.worker").warning(
        "provider calls still running %.0fs after shutdown began; exiting",
        seconds,
        extra={"event": "forced_exit"},
    )
    logging.shutdown()
    os._exit(0)


# --- cancellations (1.1) -------------------------------------------------------------------
CANCEL_TASK = "ticketrelay.cancel"


def enqueue_cancel(key: str, countdown: float | None = None) -> None:
    """The claim-check task of a cancel: only its idempotency key, on the live queue."""
    app.send_task(
        CANCEL_TASK,
        args=[key],
        argsrepr=repr((key,)),
        countdown=countdown,
        queue=get_settings().queue,
    )
