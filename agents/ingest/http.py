"""What the HTTP quote adapters (Alpha Vantage, FMP) share: one httpx client, error mapping.

The transport is a parameter, so tests pass ``httpx.MockTransport`` and never touch a network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from agents.ingest.base import Clock, wall_clock_ms
from agents.ingest.errors import ProviderError
from agents.ingest.polling import PollingConfig, PollingProvider

__all__ = ["HttpQuoteProvider"]


class HttpQuoteProvider(PollingProvider):
    """A polling provider that GETs JSON over one ``httpx.AsyncClient``."""

    def __init__(
        self,
        name: str,
        symbols: Sequence[str],
        *,
        base_url: str,
        config: PollingConfig | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
        clock: Clock = wall_clock_ms,
        max_cycles: int | None = None,
    ) -> None:
        super().__init__(name, symbols, config, clock, max_cycles)
        self.base_url = base_url
        self._transport = transport
        self._timeout = timeout
        self.client: httpx.AsyncClient | None = None

    async def _open(self) -> None:
        self.client = httpx.AsyncClient(
            base_url=self.base_url, transport=self._transport, timeout=self._timeout
        )

    async def _close(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            await client.aclose()

    async def get_json(self, path: str, params: Mapping[str, str]) -> Any:
        """GET ``path`` and parse its JSON body.

        Raises:
            ProviderError: network failure or timeout (retryable), HTTP 429 / 5xx (retryable),
                other HTTP errors such as 401 / 403 (not retryable), or a body that is not JSON.
        """
        if self.client is None:
            raise ProviderError(f"{self.name} is not started", retryable=False)
        try:
            response = await self.client.get(path, params=dict(params))
        except httpx.HTTPError as error:
            raise ProviderError(f"{type(error).__name__}: {error}") from None
        if response.status_code >= 400:
            retryable = response.status_code == 429 or response.status_code >= 500
            raise ProviderError(
                f"HTTP {response.status_code} from {self.name}: {response.text[:200]}",
                retryable=retryable,
            )
        try:
            return response.json()
        except ValueError:
            raise ProviderError(f"{self.name} answered with a non-JSON body") from None
