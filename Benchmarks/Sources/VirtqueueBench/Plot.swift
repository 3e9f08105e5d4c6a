import Foundation

/// An SVG line chart of throughput (bytes/s, log scale) against payload size (log scale) for
/// every transport measured in the batch-32 throughput sweep.
func renderThroughputPlot(_ table: ResultTable) -> String {
    let transports: [(Transport, String)] = [
        (.virtqueueSharedMemory, "#d62728"), (.virtqueueSandbox, "#9467bd"), (.virtqueueThreads, "#8c564b"),
        (.cRing, "#1f77b4"),
        (.pipe, "#2ca02c"), (.socketpair, "#ff7f0e"),
    ]
    var series: [(Transport, String, [(Double, Double)])] = []
    for (transport, color) in transports {
        let points = sweepSizes.compactMap { size -> (Double, Double)? in
            guard let rate = table.find(.throughput(size: size, batch: 32), transport)?.bytesPerSecond else {
                return nil
            }
            return (Double(size), rate)
        }
        if !points.isEmpty { series.append((transport, color, points)) }
    }
    let width = 760.0, height = 450.0
    let left = 80.0, right = 215.0, top = 50.0, bottom = 60.0
    let xMin = log2(Double(sweepSizes.first ?? 64)), xMax = log2(Double(sweepSizes.last ?? 1 << 20))
    let rates = series.flatMap { $0.2.map(\.1) }
    let yMin = floor(log10(rates.min() ?? 1e6)), yMax = ceil(log10(rates.max() ?? 1e10))
    func x(_ size: Double) -> Double { left + (log2(size) - xMin) / max(xMax - xMin, 1) * (width - left - right) }
    func y(_ rate: Double) -> Double { top + (yMax - log10(rate)) / max(yMax - yMin, 1) * (height - top - bottom) }
    var svg = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" font-family="sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        <text x="\(Int(width / 2))" y="20" text-anchor="middle" font-size="14">Throughput against payload size (batch 32, two CPUs)</text>
        <text x="\(Int(width / 2))" y="38" text-anchor="middle" font-size="11" fill="#555">payload written in place, consumer touches header and last byte; "virtqueue 2 threads": heap backend, one process</text>

        """
    var decade = yMin
    while decade <= yMax {
        let py = y(pow(10, decade))
        svg += "<line x1=\"\(left)\" y1=\"\(py)\" x2=\"\(width - right)\" y2=\"\(py)\" stroke=\"#ddd\"/>\n"
        svg +=
            "<text x=\"\(left - 6)\" y=\"\(py + 4)\" text-anchor=\"end\">\(rateLabel(pow(10, decade)))</text>\n"
        decade += 1
    }
    for size in sweepSizes {
        let px = x(Double(size))
        svg += "<line x1=\"\(px)\" y1=\"\(top)\" x2=\"\(px)\" y2=\"\(height - bottom)\" stroke=\"#eee\"/>\n"
        svg += "<text x=\"\(px)\" y=\"\(height - bottom + 18)\" text-anchor=\"middle\">\(formatBytes(size))</text>\n"
    }
    svg += "<text x=\"\((left + width - right) / 2)\" y=\"\(height - 15)\" text-anchor=\"middle\">payload size</text>\n"
    svg +=
        "<rect x=\"\(left)\" y=\"\(top)\" width=\"\(width - left - right)\" height=\"\(height - top - bottom)\" fill=\"none\" stroke=\"#333\"/>\n"
    for (index, (transport, color, points)) in series.enumerated() {
        let path = points.map { "\(x($0.0)),\(y($0.1))" }.joined(separator: " ")
        svg += "<polyline points=\"\(path)\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\"/>\n"
        for point in points {
            svg += "<circle cx=\"\(x(point.0))\" cy=\"\(y(point.1))\" r=\"3\" fill=\"\(color)\"/>\n"
        }
        let legendY = top + 20 + Double(index) * 20
        svg +=
            "<line x1=\"\(width - right + 15)\" y1=\"\(legendY)\" x2=\"\(width - right + 40)\" y2=\"\(legendY)\" stroke=\"\(color)\" stroke-width=\"2\"/>\n"
        svg += "<text x=\"\(width - right + 46)\" y=\"\(legendY + 4)\">\(transport.rawValue)</text>\n"
    }
    let pending = transports.map(\.0).filter { t in !series.contains { $0.0 == t } }
    for (index, transport) in pending.enumerated() {
        let legendY = top + 20 + Double(series.count + index) * 20
        svg +=
            "<text x=\"\(width - right + 15)\" y=\"\(legendY + 4)\" fill=\"#999\">\(transport.rawValue): pending</text>\n"
    }
    svg += "</svg>\n"
    return svg
}

/// "100 MB/s", "1 GB/s", "10 GB/s": a power of ten as a rate.
func rateLabel(_ rate: Double) -> String {
    let units: [(Double, String)] = [(1e9, "GB/s"), (1e6, "MB/s"), (1e3, "kB/s")]
    for (scale, unit) in units where rate >= scale {
        return "\(Int((rate / scale).rounded())) \(unit)"
    }
    return "\(Int(rate)) B/s"
}
