#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOConcurrencyHelpers

/// The `Date` of direct answers, as Hummingbird gives its own: RFC 9110's IMF-fixdate
/// (`Sun, 06 Nov 1994 08:49:37 GMT`), formatted once a second rather than per answer.
final class HTTPDate: Sendable {
    static let shared = HTTPDate()

    private let latest = NIOLockedValueBox<(second: time_t, text: String)>((-1, ""))

    var now: String {
        let second = time(nil)
        return latest.withLockedValue { latest in
            if latest.second != second { latest = (second, Self.format(second)) }
            return latest.text
        }
    }

    static func format(_ second: time_t) -> String {
        var second = second
        var parts = tm()
        gmtime_r(&second, &parts)
        func twoDigits(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(weekdays[Int(parts.tm_wday)]), \(twoDigits(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
            + "\(twoDigits(parts.tm_hour)):\(twoDigits(parts.tm_min)):\(twoDigits(parts.tm_sec)) GMT"
    }

    private static let weekdays = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
}
