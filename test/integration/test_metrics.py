"""The Prometheus endpoint at MetricsPath, scraped and parsed the way
Prometheus reads the text format (0.0.4), before and after a session."""

import re

import zwclient as zw

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (-?[0-9.e+-]+|\+Inf|NaN)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """{name: {labels-tuple: value}} plus {name: type}; checks the format strictly:
    every sample belongs to a family declared by HELP and TYPE before it, once."""
    samples, types, helps = {}, {}, set()
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert name not in helps, "HELP twice for " + name
            helps.add(name)
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            assert name not in types, "TYPE twice for " + name
            types[name] = kind
            continue
        assert not line.startswith("#"), line
        m = SAMPLE.match(line)
        assert m, "not a sample line: %r" % line
        name, labels, value = m.groups()
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types and family in helps, "sample %s before its HELP/TYPE" % name
        key = tuple(LABEL.findall(labels or ""))
        samples.setdefault(name, {})[key] = float(value)
    return samples, types


def scrape(server, path="/metrics"):
    status, headers, body = server.http("GET", path)
    assert status == 200, (status, body)
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4"), headers["Content-Type"]
    return parse(body.decode())


def value(samples, name):
    return samples[name][()]


def check_histogram(samples, types, name):
    assert types[name] == "histogram"
    buckets = sorted(((float(dict(k)["le"]), v) for k, v in samples[name + "_bucket"].items()))
    assert buckets[-1][0] == float("inf")
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), "buckets of %s not cumulative: %r" % (name, buckets)
    assert buckets[-1][1] == value(samples, name + "_count")
    return buckets


def test_metrics_off_by_default(server):
    assert server.http("GET", "/metrics")[0] == 404


def test_metrics_path_must_not_shadow_socket(server_factory):
    from deployutil import start_fails
    from conftest import BIN
    s = server_factory()
    s.stop()
    s.config["MetricsPath"] = "/socket/metrics"
    s.write_config()
    status, out = start_fails(BIN, s.config_path)
    assert status != 0 and "MetricsPath" in out, out


def test_metrics_move_after_a_session(server_factory):
    s = server_factory(MetricsPath="/metrics")
    before, types = scrape(s)
    for name, kind in [("zwibbler_connections", "gauge"), ("zwibbler_documents", "gauge"),
                       ("zwibbler_appends_accepted_total", "counter"),
                       ("zwibbler_appends_rejected_total", "counter"),
                       ("zwibbler_received_bytes_total", "counter"),
                       ("zwibbler_sent_bytes_total", "counter"),
                       ("zwibbler_messages_sent_total", "counter"),
                       ("zwibbler_slow_client_disconnects_total", "counter"),
                       ("zwibbler_storage_commits_total", "counter"),
                       ("zwibbler_storage_commit_seconds", "histogram"),
                       ("zwibbler_storage_commit_batch_size", "histogram"),
                       ("process_open_fds", "gauge")]:
        assert types.get(name) == kind, (name, types.get(name))
    assert value(before, "zwibbler_connections") == 0

    async def session():
        a = await zw.connect(s, "metrics-doc", name="A", mode=2, initial=b"abc")
        b = await zw.connect(s, "metrics-doc", name="B", mode=1)
        await a.append(b"12345")
        await b.expect(zw.APPEND)
        await b.send_append(0, b"stale")  # wrong offset -> NACK
        m = await b.expect(zw.ACK)
        assert m.ack == 0
        during, _ = scrape(s)
        assert value(during, "zwibbler_connections") == 2
        assert value(during, "zwibbler_documents") == 1
        await a.close()
        await b.close()

    zw.run(session())
    after, types = scrape(s)
    assert value(after, "zwibbler_appends_accepted_total") - value(before, "zwibbler_appends_accepted_total") == 1
    assert value(after, "zwibbler_appends_rejected_total") - value(before, "zwibbler_appends_rejected_total") == 1
    assert value(after, "zwibbler_received_bytes_total") > value(before, "zwibbler_received_bytes_total")
    assert value(after, "zwibbler_sent_bytes_total") > value(before, "zwibbler_sent_bytes_total")
    # catch-ups, ACK, fan-out, NACK: at least 5 messages went out
    assert value(after, "zwibbler_messages_sent_total") - value(before, "zwibbler_messages_sent_total") >= 5
    assert value(after, "zwibbler_storage_commits_total") > value(before, "zwibbler_storage_commits_total")
    lat = check_histogram(after, types, "zwibbler_storage_commit_seconds")
    assert lat[-1][1] >= 2  # the create and the append were committed
    assert value(after, "zwibbler_storage_commit_seconds_sum") > 0
    batch = check_histogram(after, types, "zwibbler_storage_commit_batch_size")
    assert batch[0] == (1.0, batch[0][1]) and batch[0][1] >= 1
    assert value(after, "zwibbler_storage_commit_batch_size_sum") >= batch[-1][1]
    assert value(after, "process_open_fds") > 0


def test_metrics_head_and_methods(server_factory):
    s = server_factory(MetricsPath="/zw-metrics")
    status, headers, body = s.http("HEAD", "/zw-metrics")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 100
    assert s.http("POST", "/zw-metrics", body=b"x")[0] == 405
    assert s.http("GET", "/metrics")[0] == 404
    # the WebSocket endpoint is unaffected
    assert s.http("GET", "/socket")[0] == 200
