"""``paperwire web``: the small HTTP service behind the links in every email.

  GET  /u/TOKEN           what unsubscribing means, with buttons (mail scanners only ever GET)
  POST /u/TOKEN           unsubscribe now; also RFC 8058 one-click (List-Unsubscribe=One-Click)
  POST /u/TOKEN/pause     pause mail until resumed
  POST /u/TOKEN/resume    resume after unsubscribe or pause
  GET  /f/more/TOKEN      record "more like this" for one paper and topic; page with an undo button
  GET  /f/less/TOKEN      record "less like this"
  POST /f/ACTION/TOKEN/undo
  GET  /healthz

Every token is signed (paperwire.tokens) for one user and one action (unsubscribe, or a vote on
one paper and topic, the path saying which vote); a bad, foreign or expired token gets a page
saying so (HTTP 400) and changes nothing. Unsubscribe and pause are the
mailer's ``paused`` state (alerts.recipients); feedback is a separate layer in Redis that the
matcher reads, so profile files stay the source of truth for what a reader wrote.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from alerts import recipients
from consumers import feedback
from paperwire.settings import Settings
from paperwire.tokens import Claims, InvalidToken, verify

log = logging.getLogger(__name__)

UNSUBSCRIBED = "unsubscribed by the reader"
PAUSED = "paused by the reader"

_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title} - paperwire</title></head>
<body style="margin:0;background:#f3f4f6;font-family:-apple-system,'Segoe UI',Roboto,Arial,sans-serif;
color:#111827"><div style="max-width:520px;margin:48px auto;background:#fff;border:1px solid #e5e7eb;border-radius:12px;
padding:28px"><div style="font-size:13px;color:#6b7280">paperwire</div><h1 style="font-size:22px;margin:6px 0 12px">
{title}</h1><div style="font-size:15px;line-height:1.5;color:#374151">{body}</div></div></body></html>"""
_BUTTON = ('<form method="post" action="{action}" style="display:inline-block;margin:12px 8px 0 0">'
           '<button style="font-size:15px;padding:8px 16px;border-radius:8px;border:1px solid #1d4ed8;'
           'background:{bg};color:{fg};cursor:pointer">{label}</button></form>')


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=html.escape(title), body=body), status_code=status)


def button(action: str, label: str, primary: bool = True) -> str:
    bg, fg = ("#1d4ed8", "#fff") if primary else ("#fff", "#1d4ed8")
    return _BUTTON.format(action=html.escape(action, quote=True), label=html.escape(label), bg=bg, fg=fg)


Handler = Callable[[Request, Claims], Awaitable[Response]]


def create_app(settings: Settings, r: redis.Redis) -> Starlette:
    def signed(action: str | None = None) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
        """The one place a token is checked: a refused token never reaches the handler."""

        def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
            async def endpoint(request: Request) -> Response:
                wanted = action or request.path_params["action"]
                if wanted not in ("unsubscribe", "more", "less"):
                    return page("Unknown link", "<p>Nothing was changed.</p>", status=404)
                try:
                    claims = verify(settings, request.path_params["token"], action=wanted)
                except InvalidToken as exc:
                    log.info("refused a link: %s", exc)
                    return page("This link cannot be used",
                                f"<p>{html.escape(str(exc))}.</p><p>Nothing was changed. Use the links in your "
                                "most recent email from paperwire.</p>", status=400)
                return await handler(request, claims)

            return endpoint

        return wrap

    def base(request: Request) -> str:
        return f"/u/{request.path_params['token']}"

    @signed("unsubscribe")
    async def unsubscribe_form(request: Request, c: Claims) -> Response:
        state = recipients.paused(r, settings, c.user)
        if state:
            return page("Your paperwire mail is off",
                        f"<p>Mail for <b>{html.escape(c.user)}</b> is off ({html.escape(state)}).</p>"
                        + button(f"{base(request)}/resume", "Resume my emails"))
        return page("Unsubscribe from paperwire?",
                    f"<p>Stop all paperwire email for <b>{html.escape(c.user)}</b>. Your profile file is kept; "
                    "you can resume at any time from this page.</p>" + button(base(request), "Unsubscribe")
                    + button(f"{base(request)}/pause", "Just pause for now", primary=False))

    def stop_mail(request: Request, c: Claims, why: str, title: str, text: str) -> Response:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        r.hset(settings.key("paused"), c.user, f"{why} on {stamp}")
        log.info("user=%s %s", c.user, why, extra={"user": c.user})
        return page(title, f"<p>{text}</p>" + button(f"{base(request)}/resume", "Resume my emails", primary=False))

    @signed("unsubscribe")
    async def unsubscribe(request: Request, c: Claims) -> Response:
        # RFC 8058: mail clients POST "List-Unsubscribe=One-Click" here; a person's button posts nothing.
        # Either way the signed token is the whole authorisation, so both take effect at once.
        return stop_mail(request, c, UNSUBSCRIBED, "You are unsubscribed",
                         f"paperwire will not email <b>{html.escape(c.user)}</b> again.")

    @signed("unsubscribe")
    async def pause(request: Request, c: Claims) -> Response:
        return stop_mail(request, c, PAUSED, "Paused",
                         f"Mail for <b>{html.escape(c.user)}</b> is paused until you resume it.")

    @signed("unsubscribe")
    async def resume(request: Request, c: Claims) -> Response:
        recipients.unpause(r, settings, c.user)
        log.info("user=%s resumed mail", c.user, extra={"user": c.user})
        return page("Welcome back", f"<p>Mail for <b>{html.escape(c.user)}</b> is on again.</p>")

    @signed()
    async def give_feedback(request: Request, c: Claims) -> Response:
        feedback.record(r, settings, c.user, c.topic, c.paper, c.action)
        undo = f"/f/{c.action}/{request.path_params['token']}/undo"
        what = "more" if c.action == "more" else "fewer"
        return page("Thanks, noted",
                    f"<p>Your topic <b>{html.escape(c.topic)}</b> will lean towards {what} papers like "
                    f"<b>{html.escape(c.paper)}</b> from the next matches on. The effect is small and adds up "
                    "over clicks; your profile file is unchanged.</p>" + button(undo, "Undo", primary=False))

    @signed()
    async def undo_feedback(request: Request, c: Claims) -> Response:
        feedback.remove(r, settings, c.user, c.topic, c.paper)
        return page("Undone", f"<p>That feedback on <b>{html.escape(c.paper)}</b> no longer counts.</p>")

    async def healthz(request: Request) -> Response:
        try:
            r.ping()
        except redis.RedisError as exc:
            return JSONResponse({"ok": False, "redis": str(exc)}, status_code=503)
        return JSONResponse({"ok": True})

    return Starlette(routes=[
        Route("/u/{token}", unsubscribe_form, methods=["GET"]),
        Route("/u/{token}", unsubscribe, methods=["POST"]),
        Route("/u/{token}/pause", pause, methods=["POST"]),
        Route("/u/{token}/resume", resume, methods=["POST"]),
        Route("/f/{action}/{token}", give_feedback, methods=["GET"]),
        Route("/f/{action}/{token}/undo", undo_feedback, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ])
