package exchangetest

import "encoding/binary"

// The first PDUs an Outlook Anywhere client sends on its channels, for
// tests that play the client ([MS-RPCH] 2.2.3.6.1 RTS PDUs). vc is the
// virtual connection cookie that ties an IN and an OUT channel together.

// ConnA1 is the first PDU of a new OUT channel ([MS-RPCH] 2.2.4.2), 76
// bytes with the virtual connection cookie at offset 32.
func ConnA1(vc [16]byte) []byte {
	out := [16]byte{0xAA}
	return rts(0, [][]byte{rtsCmd(6, u32(1)...), rtsCmd(3, vc[:]...), rtsCmd(3, out[:]...), rtsCmd(0, u32(0x40000)...)})
}

// ConnB1 is the first PDU of a new IN channel ([MS-RPCH] 2.2.4.5), 104
// bytes.
func ConnB1(vc [16]byte) []byte {
	in, group := [16]byte{0xBB}, [16]byte{0xCC}
	return rts(0, [][]byte{rtsCmd(6, u32(1)...), rtsCmd(3, vc[:]...), rtsCmd(3, in[:]...),
		rtsCmd(4, u32(1<<30)...), rtsCmd(5, u32(300000)...), rtsCmd(12, group[:]...)})
}

// InR1A1 is the first PDU of a replacement IN channel ([MS-RPCH]
// 2.2.4.10), 88 bytes.
func InR1A1(vc [16]byte) []byte {
	pred, succ := [16]byte{0xBB}, [16]byte{0xBD}
	return rts(4, [][]byte{rtsCmd(6, u32(1)...), rtsCmd(3, vc[:]...), rtsCmd(3, pred[:]...), rtsCmd(3, succ[:]...)})
}

// rts builds an RTS PDU: header with flags and the commands' count, then
// the command bytes.
func rts(flags uint16, cmds [][]byte) []byte {
	var body []byte
	for _, c := range cmds {
		body = append(body, c...)
	}
	p := []byte{5, 0, 20, 3, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.LittleEndian.PutUint16(p[8:], uint16(20+len(body)))
	p = binary.LittleEndian.AppendUint16(p, flags)
	p = binary.LittleEndian.AppendUint16(p, uint16(len(cmds)))
	return append(p, body...)
}

func rtsCmd(typ uint32, payload ...byte) []byte {
	return append(binary.LittleEndian.AppendUint32(nil, typ), payload...)
}

func u32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
