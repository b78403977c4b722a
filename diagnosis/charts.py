"""Charts for the operations page, drawn on the server as inline SVG like the site monitor's (ml.plots).

matplotlib is imported here only, when an administrator opens the page, not in every web process.
"""

import io


def operations_charts_svg(per_minute) -> str:
    """Studies finished per minute (completed, failed) above upload-to-result latency (p50, p95) per minute."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    minutes = [row[0] for row in per_minute]
    figure = Figure(figsize=(8.0, 4.6))
    FigureCanvasAgg(figure)
    throughput, latency = figure.subplots(2, 1, sharex=True)
    throughput.bar(minutes, [row[1] for row in per_minute], width=1 / 1440, color="#0d6efd", label="completed")
    throughput.bar(minutes, [row[2] for row in per_minute], width=1 / 1440, bottom=[row[1] for row in per_minute],
                   color="#b02a37", label="failed")
    throughput.set_ylabel("studies / minute")
    throughput.legend(loc="upper left", fontsize="small")
    for index, (label, colour) in enumerate((("p50", "#198754"), ("p95", "#fd7e14")), start=3):
        points = [(row[0], row[index]) for row in per_minute if row[index] is not None]
        latency.plot([time for time, _ in points], [value for _, value in points], "o-", markersize=3,
                     color=colour, label=f"upload to result, {label}")
    latency.set_ylabel("seconds")
    latency.legend(loc="upper left", fontsize="small")
    latency.set_xlabel("time (UTC)")
    figure.autofmt_xdate()
    figure.tight_layout()
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    svg = buffer.getvalue()
    return svg[svg.index("<svg"):]
