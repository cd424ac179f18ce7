"""The engine_url a session client is handed: public URL, trusted proxies' X-Forwarded-*, or the request's own."""

import pytest

from runtime.sessions.engine_url import EngineUrls

FORWARDED = {"x-forwarded-proto": "https", "x-forwarded-host": "tutor.example.com"}


def url(urls, peer, headers=FORWARDED, scheme="http", host="10.1.2.3:8080"):
    return urls.url("s1", scheme=scheme, host=host, peer=peer, headers=headers)


def test_without_settings_the_requests_own_scheme_and_host_count_and_forwarded_headers_do_not():
    urls = EngineUrls.from_settings()
    assert url(urls, "127.0.0.1") == "ws://10.1.2.3:8080/ws/sessions/s1"
    assert url(urls, "127.0.0.1", scheme="https") == "wss://10.1.2.3:8080/ws/sessions/s1"


@pytest.mark.parametrize("peer", ["10.0.0.7", "::ffff:10.0.0.7", "[fd00::1]"])
def test_a_trusted_proxy_sets_scheme_and_host(peer):
    urls = EngineUrls.from_settings(trusted_proxies=["10.0.0.0/8", "::ffff:10.0.0.0/104", "fd00::/8"])
    assert url(urls, peer) == "wss://tutor.example.com/ws/sessions/s1"


def test_an_ipv4_mapped_peer_matches_an_ipv4_network():
    urls = EngineUrls.from_settings(trusted_proxies=["10.0.0.0/8"])
    assert url(urls, "::ffff:10.0.0.7") == "wss://tutor.example.com/ws/sessions/s1"
    assert url(urls, "::ffff:192.168.0.7") == "ws://10.1.2.3:8080/ws/sessions/s1"


@pytest.mark.parametrize("peer", ["192.168.1.5", None, "", "unix-socket", "10.0.0.7 "])
def test_any_other_peer_is_ignored(peer):
    urls = EngineUrls.from_settings(trusted_proxies=["10.0.0.0/8"])
    assert url(urls, peer) == "ws://10.1.2.3:8080/ws/sessions/s1"


@pytest.mark.parametrize(("headers", "expected"), [
    ({"x-forwarded-proto": "evil, http"}, "ws://10.1.2.3:8080"),  # the nearest proxy's value is the last
    ({"x-forwarded-proto": "HTTPS"}, "wss://10.1.2.3:8080"),
    ({"x-forwarded-proto": "javascript"}, "ws://10.1.2.3:8080"),
    ({"x-forwarded-host": "a.example/path?x=1"}, "ws://10.1.2.3:8080"),
    ({"x-forwarded-host": "user@a.example"}, "ws://10.1.2.3:8080"),
    ({"x-forwarded-host": "[::1]:443"}, "ws://[::1]:443"),
    ({"x-forwarded-host": "other.example, tutor.example.com:8443"}, "ws://tutor.example.com:8443"),
    ({}, "ws://10.1.2.3:8080"),
])
def test_forwarded_values_that_are_not_a_scheme_or_host_are_ignored(headers, expected):
    urls = EngineUrls.from_settings(trusted_proxies=["127.0.0.1"])
    assert url(urls, "127.0.0.1", headers) == expected + "/ws/sessions/s1"


def test_a_public_url_wins_over_everything():
    urls = EngineUrls.from_settings("wss://public.example/base/", ["127.0.0.1"])
    assert url(urls, "127.0.0.1") == "wss://public.example/base/ws/sessions/s1"


def test_a_bad_proxy_setting_is_named():
    with pytest.raises(ValueError, match="trusted proxy 'everyone' is not an IP address or CIDR"):
        EngineUrls.from_settings(trusted_proxies=["everyone"])
