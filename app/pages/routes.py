"""Page routes: render a template with its settings; the page's script does the rest."""

from flask import current_app, render_template, send_from_directory

from . import bp


@bp.get("/checkout")
def checkout():
    return render_template("checkout.html")


@bp.get("/orders/<order_id>")
def order(order_id: str):
    cfg = current_app.config
    return render_template(
        "order.html",
        order_id=order_id,
        long_poll_ms=cfg["LONGPOLL_DEFAULT_TIMEOUT_MS"],
        max_long_polls=cfg["ORDER_PAGE_MAX_LONG_POLLS"],
        retry_pause_ms=cfg["ORDER_PAGE_RETRY_PAUSE_MS"],
        fallback_poll_ms=cfg["ORDER_PAGE_FALLBACK_POLL_MS"],
        simulate=cfg["DEV_SIMULATE_PROVIDER"],
    )


@bp.get("/admin")
def admin():
    return render_template("admin.html", reconnect_ms=current_app.config["ADMIN_PAGE_RECONNECT_MS"])


@bp.get("/favicon.ico")
def favicon():
    return send_from_directory(current_app.static_folder, "favicon.svg", mimetype="image/svg+xml")
