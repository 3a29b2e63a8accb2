"""The dashboard in a real headless Chromium: the overview, a filter, an item's page, a
dead letter requeued and completed by the real retry workers, and a crashed actor restarted
on the live tree page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from browser import Browser
from dashboard_support import OneConnection, add, dead_letter, run_attempt
from probes import Journal, spec, supervisor
from retry.retry_trees import item_in, retry_tree

from daz_actors import ChildSpec
from daz_actors.cytube.connection import ConnectionParams, CytubeConnection
from daz_actors.cytube.events import ConnectionStatus
from daz_actors.ops.dashboard import Dashboard, DashboardSettings
from daz_actors.ops.http import serve_http
from daz_actors.ops.metrics import Sources
from daz_actors.retry.handlers import AttemptContext, HandlerRegistry, PermanentError
from daz_actors.storage import queue
from daz_actors.storage.queue_types import NewItem, QueueItem, RetryStatus
from daz_actors.storage.sql_gateway import GATEWAY_NAME
from daz_actors.storage.sql_messages import SqlClient
from daz_actors.testing import fast_policy, open_tree, wait_until


async def serve(nursery: trio.Nursery, database: Any, sources: Sources) -> str:
    """Start the endpoints and the dashboard; the dashboard's address."""
    dashboard = Dashboard(database=database, settings=DashboardSettings(refresh_seconds=0.2))
    port = await nursery.start(
        lambda task_status: serve_http(sources, dashboard=dashboard, task_status=task_status)
    )
    return f"http://127.0.0.1:{port}"


async def test_overview_filter_and_an_items_page(pg, browser: Browser):
    """The overview shows the counts and draws the chart; the items page filters by status
    and error text; an item's page shows its attempts and its data with secrets hidden."""
    async with pg.trio_connection() as db, trio.open_nursery() as nursery:
        for n in range(4):
            await add(db, f"done-{n}", channel="lobby", plugin="seen")
            await run_attempt(db, "retry-worker-1")
        await add(db, "waiting", channel="den")
        await dead_letter(db, "dead-1", "relation daz_seen does not exist", channel="lobby")
        target = await dead_letter(
            db, "dead-2", "permission denied for table daz_tell", plugin="tell",
            event_data={"to": "alice", "message": "hi", "api_token": "tok-123"},
        )  # fmt: skip
        browser.base = await serve(nursery, OneConnection(db), Sources())
        async with browser.screenshot_on_failure("overview-filter-item"):
            await browser.get("/")
            await browser.wait_text('td[data-status="dead_letter"]', "2")
            assert await browser.text('td[data-status="completed"]') == "4"
            assert await browser.text("#total") == "7 items"
            drawn = await browser.wait_for(
                lambda d: d.find_element("id", "chart").get_attribute("data-total"), "the chart"
            )
            assert drawn == "6"  # 4 completed + 2 dead-lettered attempts
            assert "tell" in await browser.text("#by-plugin")
            await browser.docs_screenshot("overview")

            await browser.click('nav a[href="/items"]')
            await browser.wait_text("#filter-text", "all items")
            assert len(await browser.rows("#items tbody tr[data-id]")) == 7
            await browser.select("#f-status", "dead_letter")
            await browser.type("#f-error", "permission")
            await browser.click("#apply")
            await browser.wait_text("#filter-text", "status=dead_letter error=permission")
            rows = await browser.rows("#items tbody tr[data-id]")
            assert len(rows) == 1
            assert "permission denied for table daz_tell" in rows[0]
            await browser.docs_screenshot("items")

            await browser.click("#bulk-requeue")  # the count comes before anything changes
            await browser.wait_text("#count", "1")
            assert "status=dead_letter error=permission" in await browser.text("#what")
            await browser.docs_screenshot("confirm")
            await browser.click("#confirm-form a")  # cancel: back to the filtered list
            await browser.wait_text("#filter-text", "status=dead_letter error=permission")

            await browser.click(f'#items a[href="/items/{target}"]')
            await browser.wait_text("h1", f"Item {target}")
            assert await browser.text("#status") == "dead_letter"
            data = await browser.text("#data")
            assert '"api_token": "***"' in data
            assert "tok-123" not in data
            attempts = await browser.rows("#attempts tr.attempt")
            assert len(attempts) == 1
            assert "worker-x" in attempts[0]
            assert "dead_letter" in attempts[0]
        nursery.cancel_scope.cancel()


async def test_requeue_a_dead_letter_and_watch_it_complete(pg, browser, tmp_path, monkeypatch):
    """A dead letter requeued from its page (the count confirmed first) is run again by the
    real retry workers; the page follows it until it shows completed, and the history names
    who requeued it."""
    monkeypatch.setenv("DAZ_DATA_DIR", str(tmp_path / "data"))
    handlers = HandlerRegistry()
    attempts: list[int] = []
    release = trio.Event()  # the second attempt holds the item until the page shows it

    @handlers.register("browser.job")
    async def job(item: QueueItem, ctx: AttemptContext) -> None:
        attempts.append(ctx.attempt)
        if len(attempts) == 1:
            raise PermanentError("the first attempt fails for good")
        await release.wait()

    tree = retry_tree(pg.dsn, handlers)
    async with (
        pg.trio_connection() as db,
        open_tree(tree.sup) as running,
        trio.open_nursery() as nursery,
    ):
        await tree.gateway.connected.wait()
        await db.call(queue.enqueue, NewItem(event_id="job-1", event_type="browser.job"))
        dead = await item_in(db, "job-1", RetryStatus.DEAD_LETTER)
        client = SqlClient(tree.registry.lookup(GATEWAY_NAME))
        browser.base = await serve(
            nursery, client, Sources(tree=running, gateway_status=client.status)
        )
        async with browser.screenshot_on_failure("requeue"):
            await browser.get(f"/items/{dead.id}")
            await browser.wait_text("#status", "dead_letter")
            await browser.click("#requeue")
            await browser.wait_text("#count", "1")
            await browser.click("#confirm")
            await browser.wait_text("#notice", "requeued 1 item")
            await browser.wait_text("#status", "processing")  # followed by the page itself
            release.set()
            await browser.wait_text("#status", "completed")
            outcomes = await browser.rows("#attempts tr.attempt")
            assert [row.split()[1] for row in outcomes] == ["dead_letter", "requeued", "completed"]
            assert "dashboard@127.0.0.1" in outcomes[1]
            await browser.docs_screenshot("item", height=1000)
        assert attempts == [1, 1]
        nursery.cancel_scope.cancel()


async def test_kill_an_actor_and_watch_the_tree_restart_it(pg, browser, tmp_path, monkeypatch):
    """The tree page updates by itself: an actor that crashes shows its restart and reason
    while its siblings (here beside the real storage subtree) are left alone, and the rooms
    show their connection and rate limiter."""
    monkeypatch.setenv("DAZ_DATA_DIR", str(tmp_path / "data"))
    journal = Journal()
    storage = retry_tree(pg.dsn, HandlerRegistry())
    lobby = CytubeConnection(ConnectionParams(server="http://127.0.0.1:9", channel="lobby"))
    lobby.status = ConnectionStatus.JOINED
    root = supervisor(
        "daz",
        [
            ChildSpec(name="storage", start=storage.sup),
            spec(journal, "greeter"),
            spec(journal, "counter"),
        ],
        fast_policy(),
        storage.registry,
        storage.bus,
    )
    async with open_tree(root) as running, trio.open_nursery() as nursery:
        browser.base = await serve(
            nursery, None, Sources(tree=running, connections=lambda: [lobby])
        )
        async with browser.screenshot_on_failure("tree-restart"):
            await browser.get("/tree")
            await browser.wait_text("#live", "live")
            await browser.wait_text('tr[data-path="greeter"] td.state', "running")
            await browser.wait_text('tr[data-path="storage/retry/retry-dispatcher"]', "running")
            assert await browser.text('tr[data-path="greeter"] td.restarts') == "0"
            assert "joined" in await browser.text('tr[data-channel="lobby"]')
            with pytest.raises(Exception, match="crashed"):
                await root.ref("greeter").ask("crash")
            await wait_until(lambda: root.which_children()[1].restarts == 1)
            await browser.wait_text('tr[data-path="greeter"] td.restarts', "1")
            await browser.wait_text('tr[data-path="greeter"] td.reasons', "Boom 1")
            await browser.wait_text('tr[data-path="greeter"] td.state', "running")
            assert await browser.text('tr[data-path="counter"] td.restarts') == "0"
            assert await browser.text('tr[data-path="storage"] td.restarts') == "0"
            await browser.docs_screenshot("tree")
        nursery.cancel_scope.cancel()


def test_docs_screenshots_are_small_pngs():
    """The screenshots in docs/ are PNG files small enough to keep in the repository."""
    images = sorted(Path(__file__).resolve().parents[2].glob("docs/images/dashboard-*.png"))
    assert {p.name for p in images} >= {
        "dashboard-overview.png", "dashboard-items.png", "dashboard-confirm.png",
        "dashboard-item.png", "dashboard-tree.png",
    }  # fmt: skip
    for image in images:
        assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert image.stat().st_size < 300_000, image.name
