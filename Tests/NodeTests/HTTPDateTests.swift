@testable import HTTPServer
import Testing

@Suite("HTTP dates")
struct HTTPDateTests {
    /// RFC 9110's own example, and a date with every field of one digit.
    @Test func theyAreFormattedAsRFC9110Says() {
        #expect(HTTPDate.format(784_111_777) == "Sun, 06 Nov 1994 08:49:37 GMT")
        #expect(HTTPDate.format(1_772_327_045) == "Sun, 01 Mar 2026 01:04:05 GMT")
    }
}
