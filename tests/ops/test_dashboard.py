"""The dashboard over HTTP against a real PostgreSQL: counts, filters, keyset pages, an
item's page, actions with their CSRF check and their record, the token and read-only mode."""

from __future__ import annotations

import html
import itertools
import json
from datetime import UTC, datetime, timedelta

import pytest
import trio
from dashboard_support import (
    OneConnection,
    add,
    csrf_of,
    dead_letter,
    hidden_fields,
    ids_on,
    run_attempt,
    serving,
)
from probes import Journal, spec, supervisor

from daz_actors.ops.dashboard import DashboardRefused, DashboardSettings
from daz_actors.ops.http import serve_http
from daz_actors.ops.metrics import Sources
from daz_actors.runtime.redaction import register_secret
from daz_actors.storage import queue
from daz_actors.testing import fast_policy, open_tree, wait_until

TOKEN = "a-token-of-at-least-16-chars"


async def history_of(db, item_id):
    return await db.call(queue.history, item_id)


async def test_overview_counts_items_by_status_type_plugin_and_channel(pg):
    """The overview's counts follow the queue: by status, event type, plugin and channel."""
    async with pg.trio_connection() as db:
        await add(db, "a", channel="lobby", plugin="seen")
        await add(db, "b", channel="lobby")
        await db.call(lambda c: c.execute(
            "INSERT INTO daz_retry_queue (event_id, event_type, channel_name, operation_type)"
            " VALUES ('c', 'cytube.send', 'den', 'default')"))  # fmt: skip
        await dead_letter(db, "d", "boom", plugin="tell")
        async with serving(OneConnection(db)) as client:
            data = (await client.get("/api/overview")).json()
            page = await client.get("/")
    assert data["total"] == 4
    assert dict(data["by_status"]) == {
        "pending": 3, "processing": 0, "completed": 0, "failed": 0, "dead_letter": 1,
    }  # fmt: skip
    assert dict(data["by_event_type"]) == {"chat": 3, "cytube.send": 1}
    assert {tuple(p) for p in data["by_plugin"]} == {("seen", 1), ("tell", 1), (None, 2)}
    assert {tuple(p) for p in data["by_channel"]} == {("lobby", 2), ("den", 1), (None, 1)}
    assert [a["item_id"] for a in data["alerts"] if a["type"] == "dead_letter"] == [4]
    assert data["alert_counts"] == {"dead_letter": 1}
    assert data["refresh_ms"] >= 3000
    assert page.status_code == 200
    assert 'data-status="dead_letter">1<' in page.text
    assert "cytube.send" in page.text


async def test_throughput_counts_finished_attempts_per_minute(pg):
    """The chart's series has every minute of the last 3 hours and counts the attempts that
    finished in each: completed apart from failed and dead-lettered."""
    async with pg.trio_connection() as db:
        for n in range(3):
            await add(db, f"ok-{n}")
            await run_attempt(db, "w1")
        await add(db, "bad", max_retries=1)
        await run_attempt(db, "w1", error="first")
        await run_attempt(db, "w1", error="second")  # out of retries: dead letter
        async with serving(OneConnection(db)) as client:
            series = (await client.get("/api/overview")).json()["series"]
    assert 180 <= len(series) <= 182
    minutes = [datetime.fromisoformat(m["minute"]) for m in series]
    assert minutes == sorted(minutes)
    assert all(b - a == timedelta(minutes=1) for a, b in itertools.pairwise(minutes))
    assert sum(m["completed"] for m in series) == 3
    assert sum(m["failed"] for m in series) == 2
    assert series[-1]["completed"] + series[-2]["completed"] == 3


async def test_items_filter_by_each_field(pg):
    """Each filter field narrows the list: status, type, plugin, channel, time, error text."""
    async with pg.trio_connection() as db:
        lobby = await add(db, "1", channel="lobby", plugin="seen")
        await add(db, "2", channel="den")
        dead = await dead_letter(db, "3", "relation 100%_sure does not exist", channel="den")
        other = await dead_letter(db, "4", "relation 100 sure does not exist", plugin="tell")
        await db.call(lambda c: c.execute(
            "UPDATE daz_retry_queue SET updated_at = now() - interval '2 days' WHERE id = $1",
            lobby))  # fmt: skip
        async with serving(OneConnection(db)) as client:

            async def listed(**params: str) -> list[int]:
                reply = await client.get("/items", params=params)
                assert reply.status_code == 200, reply.text
                return ids_on(reply.text)

            assert await listed() == [other, dead, 2, lobby]
            assert await listed(status="dead_letter") == [other, dead]
            assert await listed(type="chat", channel="den") == [dead, 2]
            assert await listed(plugin="seen") == [lobby]
            assert await listed(error="100%_SURE") == [dead]  # literal %, _; any case
            assert await listed(error="sure does not") == [other, dead]
            yesterday = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
            assert await listed(until=yesterday) == [lobby]
            assert await listed(since=yesterday) == [other, dead, 2]
            assert await listed(status="completed") == []


async def test_bad_filters_get_400_naming_the_field(pg):
    """A filter value the dashboard cannot use gets 400 with a message naming the field."""
    async with pg.trio_connection() as db, serving(OneConnection(db)) as client:
        for params, named in (
            ({"status": "lost"}, "status: 'lost' is not one of"),
            ({"since": "yesterday"}, "since: 'yesterday' is not a time"),
            ({"before": "x"}, "before: 'x' is not a whole number"),
            ({"limit": "0"}, "limit: 0 is not from 1 to 500"),
            ({"since": "2026-01-02T00:00", "until": "2026-01-01T00:00"}, "since: must be before"),
        ):
            reply = await client.get("/items", params=params)
            assert reply.status_code == 400
            assert named in html.unescape(reply.text)
        assert (await client.get("/api/items/999")).status_code == 404
        assert (await client.get("/items/999")).status_code == 404


async def test_keyset_pages_list_every_item_once_newest_first(pg):
    """Following the "older" links walks every matching item exactly once, newest first."""
    async with pg.trio_connection() as db:
        for n in range(23):
            await add(db, f"item-{n}", channel="lobby" if n % 2 else "den")
        async with serving(OneConnection(db)) as client:
            seen: list[int] = []
            url = "/items?channel=lobby&limit=5"
            pages = 0
            while url:
                reply = await client.get(url)
                seen += ids_on(reply.text)
                pages += 1
                found = [part for part in reply.text.split('"') if "before=" in part]
                url = found[0].replace("&amp;", "&") if 'id="next-page"' in reply.text else ""
    assert pages == 3
    assert len(seen) == 11
    assert seen == sorted(seen, reverse=True)


async def test_item_page_shows_redacted_data_checkpoint_and_every_attempt(pg):
    """An item's page shows its data as JSON with secrets redacted, its checkpoint, and each
    attempt with its outcome, worker, duration and error."""
    register_secret("s3cret-registered")
    async with pg.trio_connection() as db:
        item_id = await add(
            db, "x", max_retries=3,
            event_data={"text": "hi s3cret-registered", "password": "hunter2",
                        "url": "postgresql://bot:pgpass@db/daz", "n": 1},
        )  # fmt: skip
        await run_attempt(db, "worker-7", error="timeout talking to s3cret-registered")
        (held,) = await db.call(queue.acquire, "worker-8", batch_size=1)
        await db.call(queue.save_checkpoint, held.lease, {"steps": ["fetched"]})
        async with serving(OneConnection(db)) as client:
            page = (await client.get(f"/items/{item_id}")).text
            live = (await client.get(f"/api/items/{item_id}")).json()
    for secret in ("s3cret-registered", "hunter2", "pgpass"):
        assert secret not in page
    assert "&#34;password&#34;: &#34;***&#34;" in page
    assert "postgresql://bot:***@db/daz" in page
    assert "&#34;fetched&#34;" in page  # the checkpoint
    assert page.count('class="attempt"') == 2
    assert "worker-7" in page
    assert "worker-8" in page
    assert "timeout talking to ***" in page
    assert " ms<" in page or " s<" in page  # the finished attempt's duration
    assert "running" in page  # the attempt still held by worker-8
    assert live == {"id": item_id, "status": "processing", "retry_count": 1, "attempts": 2,
                    "last_error": "timeout talking to ***"}  # fmt: skip


async def confirm_and_post(client, query: str) -> tuple[int, object]:
    """Open the confirm page of `query`, read its count, and submit its form."""
    confirm = await client.get(f"/actions/confirm?{query}")
    assert confirm.status_code == 200, confirm.text
    count = int(confirm.text.split('id="count">', 1)[1].split("<", 1)[0])
    if count == 0:
        return 0, None
    fields = hidden_fields(confirm.text)
    reply = await client.post("/actions", data=fields)
    return count, reply


async def test_bulk_requeue_shows_the_count_then_records_who_did_it(pg):
    """Requeueing dead letters by filter shows how many match before anything changes; once
    confirmed they are pending, and each item's history and the actions log name who did it."""
    async with pg.trio_connection() as db:
        first = await dead_letter(db, "d1", "permission denied", event_data={})
        second = await dead_letter(db, "d2", "permission denied")
        other = await dead_letter(db, "d3", "syntax error")
        async with serving(OneConnection(db)) as client:
            count, reply = await confirm_and_post(client, "action=requeue&error=permission")
            assert count == 2
            assert reply.status_code == 303
            assert "notice=requeued+2+items" in reply.headers["location"]
            landing = await client.get(reply.headers["location"])
            assert "requeued 2 items" in landing.text
        for item_id, status in ((first, "pending"), (second, "pending"), (other, "dead_letter")):
            item = await db.call(queue.get, item_id)
            assert item.status.value == status
        (attempt, requeued) = await history_of(db, first)
        assert attempt.outcome == "dead_letter"
        assert requeued.outcome == "requeued"
        assert requeued.worker_id == "dashboard@127.0.0.1"
        rows = await db.call(lambda c: c.fetch("SELECT * FROM daz_retry_actions"))
        assert [(r["action"], r["done_by"], r["item_count"], list(r["item_ids"]), r["filter"])
                for r in rows] == [
            ("requeue", "dashboard@127.0.0.1", 2, [first, second], "error=permission")
        ]  # fmt: skip


async def test_bulk_action_stops_at_the_items_counted(pg):
    """Items arriving between the count and the confirmation are left alone."""
    async with pg.trio_connection() as db:
        await dead_letter(db, "d1", "boom")
        async with serving(OneConnection(db)) as client:
            confirm = await client.get("/actions/confirm?action=requeue")
            later = await dead_letter(db, "d2", "boom")
            reply = await client.post("/actions", data=hidden_fields(confirm.text))
            assert "requeued+1+item" in reply.headers["location"]
        assert (await db.call(queue.get, later)).status.value == "dead_letter"


async def test_replay_and_purge_of_one_item(pg):
    """A finished item is replayed (history says by whom); a purge deletes it and the actions
    log keeps the record; neither touches an item it does not apply to."""
    async with pg.trio_connection() as db:
        done = await add(db, "done")
        await run_attempt(db, "w")
        pending = await add(db, "pending")
        async with serving(OneConnection(db)) as client:
            count, _ = await confirm_and_post(client, f"action=replay&id={pending}")
            assert count == 0
            count, reply = await confirm_and_post(client, f"action=replay&id={done}")
            assert count == 1
            assert reply.headers["location"].startswith(f"/items/{done}?notice=replayed")
            assert (await db.call(queue.get, done)).status.value == "pending"
            assert (await history_of(db, done))[-1].outcome == "replayed"
            await run_attempt(db, "w")  # the replay runs
            await run_attempt(db, "w")  # and so does the pending one
            count, reply = await confirm_and_post(client, f"action=purge&id={done}")
            assert count == 1
            assert "purged+1+item" in reply.headers["location"]
        assert await db.call(queue.get, done) is None
        assert (await db.call(queue.get, pending)) is not None
        rows = await db.call(lambda c: c.fetch("SELECT action, item_ids, filter FROM"
                                               " daz_retry_actions ORDER BY id"))  # fmt: skip
        assert [(r["action"], list(r["item_ids"]), r["filter"]) for r in rows] == [
            ("replay", [done], None), ("purge", [done], None)
        ]  # fmt: skip


async def test_forms_without_the_csrf_token_are_refused(pg):
    """A POST without the CSRF field, with another value, or from another origin is refused
    with 403 and changes nothing."""
    async with pg.trio_connection() as db:
        item_id = await dead_letter(db, "d", "boom")
        async with serving(OneConnection(db)) as client:
            confirm = await client.get(f"/actions/confirm?action=requeue&id={item_id}")
            fields = hidden_fields(confirm.text)
            assert fields["csrf"] == csrf_of(confirm.text)
            attempts = [
                ({k: v for k, v in fields.items() if k != "csrf"}, {}),
                ({**fields, "csrf": "x" * 43}, {}),
                (fields, {"origin": "http://evil.example"}),
            ]
            for data, headers in attempts:
                reply = await client.post("/actions", data=data, headers=headers)
                assert reply.status_code == 403
                assert "CSRF" in reply.text
            client.cookies.clear()
            assert (await client.post("/actions", data=fields)).status_code == 403
        assert (await db.call(queue.get, item_id)).status.value == "dead_letter"


async def test_off_loopback_without_a_token_refuses_to_start():
    """On an address that is not loopback the dashboard refuses to start without a token,
    before anything listens; loopback addresses and a configured token are accepted."""
    for host in ("0.0.0.0", "192.0.2.10", "::", "example.org"):
        with pytest.raises(DashboardRefused, match="DAZ_DASHBOARD_TOKEN"), trio.fail_after(10):
            await serve_http(Sources(), host=host, dashboard=_dashboard())
    with pytest.raises(DashboardRefused, match="at least 16"):
        DashboardSettings(token="short")
    async with trio.open_nursery() as nursery:
        for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
            await nursery.start(
                lambda task_status, h=host: serve_http(
                    Sources(), host=h, dashboard=_dashboard(), task_status=task_status
                )
            )
        nursery.cancel_scope.cancel()


def _dashboard(**settings):
    from daz_actors.ops.dashboard import Dashboard

    return Dashboard(database=None, settings=DashboardSettings(**settings))


async def test_without_a_token_only_loopback_host_names_are_answered(pg):
    """Without a token a request naming another host (DNS rebinding: a web page whose name
    resolves to 127.0.0.1) is refused; loopback names are answered; a token lifts it."""
    async with pg.trio_connection() as db, serving(OneConnection(db)) as client:
        for host in ("evil.example", "evil.example:9464", "10.0.0.1"):
            for url in ("/", "/items", "/api/overview", "/login"):
                reply = await client.get(url, headers={"host": host})
                assert reply.status_code == 403, (host, url)
        for host in ("127.0.0.1:9464", "localhost:1", "[::1]:80", "127.0.0.1"):
            assert (await client.get("/api/overview", headers={"host": host})).status_code == 200
        assert (await client.get("/healthz", headers={"host": "evil.example"})).status_code == 503
    async with pg.trio_connection() as db, serving(OneConnection(db), token=TOKEN) as client:
        reply = await client.get(
            "/api/overview",
            headers={"host": "bot.example:9464", "authorization": f"Bearer {TOKEN}"},
        )
        assert reply.status_code == 200


async def test_a_configured_token_is_required_on_every_dashboard_page(pg):
    """With a token every dashboard page needs it (a bearer header or the session cookie
    from /login); a wrong token is refused; the health endpoints stay open."""
    async with pg.trio_connection() as db, serving(OneConnection(db), token=TOKEN) as client:
        page = await client.get("/items")
        assert page.status_code == 303
        assert page.headers["location"] == "/login?next=/items"
        assert (await client.get("/api/overview")).status_code == 401
        assert (await client.get("/tree/events")).status_code == 401
        assert (await client.get("/healthz")).status_code == 503  # no tree: open, but down
        assert (await client.get("/metrics")).status_code == 200
        bearer = await client.get("/api/overview", headers={"authorization": f"Bearer {TOKEN}"})
        assert bearer.status_code == 200
        wrong = await client.get("/api/overview", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401

        login = await client.get("/login?next=/items")
        fields = hidden_fields(login.text)
        refused = await client.post("/login", data={**fields, "token": "not-the-token-at-all"})
        assert refused.status_code == 401
        assert (await client.get("/items")).status_code == 303
        accepted = await client.post("/login", data={**fields, "token": TOKEN})
        assert accepted.status_code == 303
        assert accepted.headers["location"] == "/items"
        assert TOKEN not in accepted.headers["set-cookie"]
        assert (await client.get("/items")).status_code == 200
        for elsewhere in ("//evil.example/", "/\\evil.example/", "https://evil.example/"):
            away = await client.post("/login", data={**fields, "next": elsewhere, "token": TOKEN})
            assert away.headers["location"] == "/"


async def test_read_only_hides_the_actions_and_refuses_them(pg):
    """In read-only mode no page offers an action and the action routes answer 403."""
    async with pg.trio_connection() as db:
        item_id = await dead_letter(db, "d", "boom")
        async with serving(OneConnection(db), read_only=True) as client:
            for url in ("/items", f"/items/{item_id}"):
                page = (await client.get(url)).text
                assert "read-only" in page
                assert "/actions/confirm" not in page
            assert (await client.get("/actions/confirm?action=requeue")).status_code == 403
            csrf = csrf_of((await client.get("/login")).text)
            reply = await client.post("/actions", data={"csrf": csrf, "action": "requeue"})
            assert reply.status_code == 403
        async with serving(OneConnection(db)) as client:
            assert "/actions/confirm?action=requeue" in (await client.get("/items")).text
        assert (await db.call(queue.get, item_id)).status.value == "dead_letter"


async def test_tree_events_stream_the_tree_and_show_a_restart():
    """/tree/events streams the tree as server-sent events; a crash shows as a restart with
    its reason in the next event."""
    journal = Journal()
    root = supervisor("root", [spec(journal, "a"), spec(journal, "b")], fast_policy())
    async with open_tree(root) as tree, serving(None, Sources(tree=tree),
                                                refresh_seconds=0.05) as client:  # fmt: skip
        port = int(str(client.base_url).rsplit(":", 1)[1].rstrip("/"))
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GET /tree/events HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
            buffer = b""

            async def next_state() -> dict:
                nonlocal buffer
                while b"\ndata: " not in buffer or b"\n\n" not in buffer.split(b"\ndata: ", 1)[1]:
                    chunk = await stream.receive_some(65536)
                    assert chunk, "the stream ended"
                    buffer += chunk
                head, rest = buffer.split(b"\ndata: ", 1)
                if b"HTTP/1.1" in head:  # the first event follows the headers
                    assert b"content-type: text/event-stream" in head.lower()
                event, buffer = rest.split(b"\n\n", 1)
                return json.loads(event)

            with trio.fail_after(10):
                first = await next_state()
                assert [(n["path"], n["state"], n["restarts"]) for n in first["tree"]] == [
                    ("a", "running", 0), ("b", "running", 0)
                ]  # fmt: skip
                with pytest.raises(Exception, match="crashed"):
                    await root.ref("a").ask("crash")
                await wait_until(lambda: root.which_children()[0].restarts == 1)
                while True:
                    state = await next_state()
                    a = state["tree"][0]
                    if a["restarts"] == 1 and a["state"] == "running":
                        break
        assert a["restarts_by_reason"] == [["Boom", 1]]
        assert a["mailbox"]["capacity"] > 0
        assert state["root"] == {"name": "root", "running": True, "stopping": False}


async def test_a_bulk_action_past_its_limit_says_so_and_takes_the_oldest(pg, monkeypatch):
    """Past the most items one action touches, the confirmation says so and the action
    takes the oldest; confirming again takes the rest."""
    from daz_actors.storage import queue_browse

    monkeypatch.setattr(queue_browse, "MAX_BULK", 2)
    async with pg.trio_connection() as db:
        ids = [await dead_letter(db, f"d{n}", "boom") for n in range(3)]
        async with serving(OneConnection(db)) as client:
            confirm = await client.get("/actions/confirm?action=requeue")
            assert 'id="count">3<' in confirm.text
            assert "at most 2 items, the oldest first" in confirm.text
            assert "Requeue 2 items" in confirm.text
            reply = await client.post("/actions", data=hidden_fields(confirm.text))
            assert "requeued+2+items" in reply.headers["location"]
            statuses = [(await db.call(queue.get, i)).status.value for i in ids]
            assert statuses == ["pending", "pending", "dead_letter"]
            count, reply = await confirm_and_post(client, "action=requeue")
            assert count == 1
        assert (await db.call(queue.get, ids[2])).status.value == "pending"


async def test_the_overview_lists_the_cluster_nodes_and_what_each_holds(pg):
    """With nodes registered (several processes on one database) the overview lists each,
    with the channels and singleton jobs whose valid lease it holds; an expired lease is not
    shown as held. Without nodes (one process) there is no Nodes section."""
    from daz_actors.cluster import sql as cluster_sql

    async with pg.trio_connection() as db:
        async with serving(OneConnection(db)) as client:
            alone = await client.get("/")
        for node_id, name in [("n-a", "alpha"), ("n-b", "beta")]:
            node = cluster_sql.NodeInfo(
                node_id=node_id, name=name, host="h1", pid=41, version="9.9",
                weight=1.0, channels=("lobby", "den", "attic"),
            )  # fmt: skip
            await db.call(lambda c, n=node: cluster_sql.heartbeat_and_renew(c, node=n, ttl=30))
        for kind, lease, node_id, ttl in [
            (cluster_sql.CHANNEL, "lobby", "n-a", 30),
            (cluster_sql.CHANNEL, "den", "n-b", 30),
            (cluster_sql.SINGLETON, "retry.cleanup", "n-b", 30),
            (cluster_sql.CHANNEL, "attic", "n-a", 0.001),  # expires at once
        ]:
            token = await db.call(
                lambda c, k=kind, n=lease, i=node_id, t=ttl: cluster_sql.claim(
                    c, kind=k, name=n, node_id=i, ttl=t
                )
            )
            assert token is not None
        async with serving(OneConnection(db)) as client:
            page = await client.get("/")
    assert 'id="nodes"' not in alone.text
    assert page.status_code == 200
    rows = {
        name: page.text.split(f'data-node="{name}"', 1)[1].split("</tr>", 1)[0]
        for name in ("alpha", "beta")
    }
    assert '<td class="node-channels">lobby</td>' in rows["alpha"]  # not the expired attic
    assert '<td class="node-channels">den</td>' in rows["beta"]
    assert "retry.cleanup" in rows["beta"]
    assert "retry.cleanup" not in rows["alpha"]
