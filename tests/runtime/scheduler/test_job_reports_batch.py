"""A node's `job_reports` batch as the plane serves it: the plane's welcome announces
`job_batch`, each good entry reaches the jobs role in order, and a bad entry or a bad batch gets
a non-fatal error naming it while the connection goes on. The real scheduler and serve_node;
the node is a bare mux over memory."""

import json
from functools import partial

import msgspec
import trio

from runtime.control import messages
from runtime.control.messages import JOB_BATCH, Error, Heartbeat, Hello, JobReport, Welcome
from runtime.scheduler.node_connection import route_job_messages, serve_node
from runtime.scheduler.service import Scheduler
from runtime.scheduler.store import ClusterStore
from runtime.tunnel import open_mux
from tests.polling import wait_until
from tests.runtime.scheduler.test_cluster import resolve
from tests.runtime.tunnel.test_mux import transport_pair


async def test_a_bad_job_reports_batch_is_refused_without_closing_the_connection(tmp_path):
    store = ClusterStore(tmp_path / "cluster.db")
    scheduler = Scheduler(store, resolve, hub_url="http://hub.invalid", lost_after=15, heartbeat_interval=5)
    _, secret = store.create_token("desk")
    got = []
    route_job_messages(scheduler, lambda node, message: got.append((node, message)))
    node_end, plane_end = transport_pair()
    good = [JobReport(f"run_{n}", "s", 1, 2, "succeeded", exit_code=0) for n in range(2)]
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(serve_node, scheduler, plane_end, auth=store.check_token(secret)))
                async with open_mux(node_end, opener=True) as mux:
                    await mux.send_control(messages.encode(Hello(
                        node_id="n1", name="desk", agent_version="0", cpu_count=2, ram_mb=8000,
                        features=messages.FEATURES)))
                    welcome = messages.decode_plane_message(await mux.receive_control())
                    assert isinstance(welcome, Welcome) and JOB_BATCH in welcome.features
                    entries = [msgspec.to_builtins(good[0]), {"run_id": 1}, {"step": "s"}, msgspec.to_builtins(good[1])]
                    await mux.send_control(json.dumps({"type": "job_reports", "reports": entries}))
                    error = messages.decode_plane_message(await mux.receive_control())
                    assert isinstance(error, Error) and not error.fatal
                    assert error.message.startswith("job_reports entry 1 is invalid: Expected `str`, got `int`")
                    assert error.message.endswith("(and 1 more entries refused)")
                    await mux.send_control('{"type": "job_reports", "reports": "nope"}')
                    error = messages.decode_plane_message(await mux.receive_control())
                    assert isinstance(error, Error) and not error.fatal and "must be a JSON array" in error.message
                    await mux.send_control(messages.encode(Heartbeat(seq=1, free_ram_mb=4000)))
                    await wait_until(lambda: len(got) == 3)
                assert got == [("n1", good[0]), ("n1", good[1]), ("n1", Heartbeat(seq=1, free_ram_mb=4000))]
                nursery.cancel_scope.cancel()
    finally:
        route_job_messages(scheduler, None)
        store.close()
