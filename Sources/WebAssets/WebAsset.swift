// The demo web client: plain HTML, CSS and JavaScript, embedded at build time by
// Plugins/EmbedFiles (`WebAsset.index`, `WebAsset.app`, `WebAsset.style`, …).

/// A file of the demo web client.
public struct WebAsset: Sendable {
    /// The file name, e.g. `app.js`.
    public let file: String
    public let source: String

    public init(file: String, source: String) {
        self.file = file
        self.source = source
    }

    public var contentType: String {
        switch file.split(separator: ".").last {
        case "html": "text/html; charset=utf-8"
        case "js": "text/javascript; charset=utf-8"
        case "css": "text/css; charset=utf-8"
        default: "application/octet-stream"
        }
    }

    /// The asset served at `/static/<file>`.
    public static func named(_ file: String) -> WebAsset? { all.first { $0.file == file } }
}
