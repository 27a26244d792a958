import Foundation
@testable import HTTPServer
import NIOCore
import Testing

/// A relay's body is checked for JSON syntax without building anything, and passed on as one
/// line of text: it must accept and refuse exactly what a JSON parser does.
@Suite("Relay bodies")
struct RelayBodyTests {
    static let valid = [
        #"{}"#, #"[]"#, #"{"sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1","type":"offer"}"#, #"{"a":[1,-2.5e+3,0,0.0,1E9,true,false,null]}"#,
        #""just a string""#, "42", "-0", "true", "null", " \t{ \"spaced\" : [ 1 , 2 ] } \n", #"{"u":"\u00e9\ud83d\ude00"}"#,
        #"{"esc":"\"\\\/\b\f\n\r\t"}"#, "{\"é\":\"ünï\"}", #"[[[[[[[[[[]]]]]]]]]]"#, #"{"a":{"b":{"c":{}}}}"#,
    ]
    static let invalid = [
        "{nope", "{", "}", "[1,]", "[,1]", #"{"a":1,}"#, #"{"a" 1}"#, #"{a:1}"#, "01", "1.", ".5", "-", "1e", "+1", "0x10",
        "tru", "nul", "True", #""unterminated"#, "\"tab\there\"", #""\x""#, #""\u12G4""#, "{}{}", "[] x", "NaN", "Infinity",
        #"{"a":1"#, "[\"a\"", "'single'",
    ]

    @Test(arguments: valid) func jsonIsPassedOnAsOneLine(_ text: String) throws {
        let line = try #require(RelayBody.compactJSON(ByteBuffer(string: text)))
        #expect(!line.contains("\n") && !line.contains("\r"))
        // Only whitespace between tokens changed: it parses to the same value.
        let parsed = try JSONSerialization.jsonObject(with: Data(line.utf8), options: .fragmentsAllowed)
        let original = try JSONSerialization.jsonObject(with: Data(text.utf8), options: .fragmentsAllowed)
        #expect("\(parsed)" == "\(original)")
    }

    @Test(arguments: invalid) func anythingElseIsRefused(_ text: String) {
        #expect(RelayBody.compactJSON(ByteBuffer(string: text)) == nil)
    }

    @Test func anEmptyBodyIsAnEmptyObjectAndBadUTF8IsRefused() {
        #expect(RelayBody.compactJSON(ByteBuffer()) == "{}")
        #expect(RelayBody.compactJSON(ByteBuffer(bytes: [0x22, 0xFF, 0x22])) == nil)
        #expect(RelayBody.compactJSON(ByteBuffer(bytes: [0x22, 0xC3, 0xA9, 0x22])) == "\"é\"")
    }

    @Test func nestingDeeperThanTheLimitIsRefused() {
        let deep = String(repeating: "[", count: JSONSyntax.maxDepth) + String(repeating: "]", count: JSONSyntax.maxDepth)
        #expect(RelayBody.compactJSON(ByteBuffer(string: deep)) != nil)
        #expect(RelayBody.compactJSON(ByteBuffer(string: "[" + deep + "]")) == nil)
    }

    /// Thousands of small corruptions of real bodies (a byte replaced, dropped or doubled),
    /// the same ones each run: the verdict matches Foundation's parser on every one.
    @Test func agreesWithAJSONParserOnCorruptedBodies() {
        let seeds = [
            #"{"sdp":"v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1","type":"offer"}"#,
            #"{"candidate":"candidate:1 1 UDP 2122252543 192.168.1.2 54321 typ host","sdpMid":"0","sdpMLineIndex":0}"#,
            #"{"n":[1,-2.5e+3,0.25,true,false,null],"s":"\u00e9\"x\\"}"#,
        ]
        let alphabet = Array(#"{}[]:,"\-+.eE0123456789 tfnrul\/ab"#.utf8)
        var random = SeededGenerator(seed: 20261203)
        var disagreements: [String] = []
        for seed in seeds {
            for _ in 0..<2000 {
                var bytes = Array(seed.utf8)
                let index = Int(random.next() % UInt64(bytes.count))
                switch random.next() % 3 {
                case 0: bytes[index] = alphabet[Int(random.next() % UInt64(alphabet.count))]
                case 1: bytes.remove(at: index)
                default: bytes.insert(bytes[index], at: index)
                }
                let ours = RelayBody.compactJSON(ByteBuffer(bytes: bytes)) != nil
                let foundations = (try? JSONSerialization.jsonObject(with: Data(bytes), options: .fragmentsAllowed)) != nil
                if ours != foundations { disagreements.append("\(String(decoding: bytes, as: UTF8.self)): ours \(ours)") }
            }
        }
        #expect(disagreements.isEmpty, "\(disagreements.prefix(5))")
    }
}
