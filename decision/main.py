"""Run the decision service in the foreground until SIGINT/SIGTERM: what `fraudctl decide serve` calls."""
from __future__ import annotations

import asyncio
import logging
import signal
import sys

from fraud.errors import FraudError
from fraud.sources import display

from decision.service import DecisionOptions, DecisionService


def _echo(message: str, err: bool = False) -> None:
    print(message, file=sys.stderr if err else sys.stdout, flush=True)


async def run(options: DecisionOptions, host: str, port: int, *, echo=_echo, stop: asyncio.Event | None = None):
    from aiohttp import web

    from decision.http import application

    service = DecisionService(options)
    runner = web.AppRunner(application(service), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await service.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    bound = runner.addresses[0][1]
    echo(f"Deciding at http://{host}:{bound}/v1/decisions  (model {options.serving.removeprefix('grpc://')}, "
         f"state {display(options.state or 'memory://')}; Ctrl-C stops)")
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    await stop.wait()
    await runner.cleanup()
    await service.close()


def serve(options: DecisionOptions, host: str, port: int, *, echo=_echo) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        asyncio.run(run(options, host, port, echo=echo))
    except FraudError as exc:  # a bad rules file, an unsupported state URL...
        echo(f"Error: {exc}", err=True)
        return exc.exit_code
    except OSError as exc:
        echo(f"Error: {exc}", err=True)
        return 1
    return 0
