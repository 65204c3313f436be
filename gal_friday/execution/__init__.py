"""ExecutionHandler: approved signals become orders at a venue, and every state change of
every order comes back as an ExecutionReportEvent. ``venue`` is the port; ``matching`` the
deterministic matching engine (shared with the simulator and the backtester); ``paper`` the
local matching-engine venue; Kraken's venue lives in ``gal_friday.kraken.trading``."""
