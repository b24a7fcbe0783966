"""The Prometheus text rendering."""

from gateway.metrics import Metrics, render


def test_render_has_the_families_and_labels() -> None:
    m = Metrics(messages_sent=3, conflations=2, records_in={"fiml.prices": 7})
    text = render(m, connections=2, subscriptions={"price": 1}, lag={"fiml.prices": 4})
    assert "fiml_gateway_connections 2.0\n" in text
    assert 'fiml_gateway_consumer_lag{topic="fiml.prices"} 4' in text
    assert "fiml_gateway_messages_sent_total 3" in text
    assert "fiml_gateway_conflations_total 2.0\n" in text
    assert text.endswith("\n") and "# TYPE fiml_gateway_updates_dropped_total counter" in text


def test_public_api() -> None:
    import gateway

    assert set(gateway.__all__) == {
        "CLOSE_SLOW_CLIENT",
        "GatewayError",
        "GatewaySettings",
        "RangeReadError",
        "SlowClientError",
        "create_app",
    }


def test_render_buffered_gauges() -> None:
    text = render(
        Metrics(),
        connections=0,
        subscriptions={},
        lag={},
        buffered={"pending_updates": 5, "max_queued_frames": 2},
    )
    assert "fiml_gateway_pending_updates 5.0\n" in text
    assert "# TYPE fiml_gateway_max_queued_frames gauge" in text
