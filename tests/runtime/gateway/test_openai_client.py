"""The official `openai` package, pointed at the gateway with base_url and a key (sync client in a thread)."""

from functools import partial

import openai
import trio


def _session(base_url, key):
    client = openai.OpenAI(base_url=base_url + "/v1", api_key=key, max_retries=0, timeout=20)
    try:
        models = [m.id for m in client.models.list()]
        chat = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi there"}])
        pieces, usage = [], None
        for chunk in client.chat.completions.create(model="echo", stream=True,
                                                    stream_options={"include_usage": True},
                                                    messages=[{"role": "user", "content": "one two three"}]):
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            if chunk.usage:
                usage = chunk.usage
        emb = client.embeddings.create(model="echo", input=["a", "b"])
        try:
            client.chat.completions.create(model="missing", messages=[{"role": "user", "content": "x"}])
        except openai.NotFoundError as exc:
            missing = exc.status_code
        bad = openai.OpenAI(base_url=base_url + "/v1", api_key="sk-wrong", max_retries=0)
        try:
            bad.models.list()
        except openai.AuthenticationError as exc:
            unauthorized = exc.status_code
        return models, chat, "".join(pieces), usage, emb, missing, unauthorized
    finally:
        client.close()


async def test_the_openai_package_works_through_the_gateway(cluster):
    key = await cluster.key()
    with trio.fail_after(60):
        models, chat, streamed, usage, emb, missing, unauthorized = await trio.to_thread.run_sync(
            partial(_session, cluster.url, key))
    assert models == ["echo"]
    assert chat.choices[0].message.content == "hi there" and chat.usage.completion_tokens == 2
    assert streamed == "one two three" and usage.completion_tokens == 3
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 64
    assert (missing, unauthorized) == (404, 401)


async def test_the_async_client_works_under_trio(cluster):
    """openai's AsyncOpenAI uses anyio through httpx, so it runs under trio too."""
    key = await cluster.key()
    client = openai.AsyncOpenAI(base_url=cluster.url + "/v1", api_key=key, max_retries=0, timeout=20)
    try:
        with trio.fail_after(20):
            chat = await client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "yo"}])
    finally:
        await client.close()
    assert chat.choices[0].message.content == "yo"
