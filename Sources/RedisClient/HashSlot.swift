/// The Redis Cluster hash slot of a key or a sharded channel: CRC16 (XMODEM) of its hash tag
/// (the part between the first `{` and the next `}`, if that part is not empty) or else of the
/// whole name, modulo 16384. Keys of one script call must share a slot on a cluster.
public enum HashSlot {
    public static let count = 16384

    public static func of(_ name: some StringProtocol) -> Int {
        let bytes = Array(name.utf8)
        var tagged = bytes[...]
        if let open = bytes.firstIndex(of: UInt8(ascii: "{")),
            let close = bytes[(open + 1)...].firstIndex(of: UInt8(ascii: "}")), close > open + 1
        {
            tagged = bytes[(open + 1)..<close]
        }
        return Int(crc16(tagged)) % count
    }

    /// CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, as the cluster specification has it.
    private static func crc16(_ bytes: ArraySlice<UInt8>) -> UInt16 {
        var crc: UInt16 = 0
        for byte in bytes {
            crc ^= UInt16(byte) << 8
            for _ in 0..<8 { crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
        }
        return crc
    }
}
