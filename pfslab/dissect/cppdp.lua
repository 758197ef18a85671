--[[
  Wireshark dissector for pfslab's CPPDP on UDP and TCP port 4051.

  CPPDP ("Cisco Peer to Peer Distribution Protocol") is the port Cisco IP phones use for
  Peer Firmware Sharing. Its real wire format is unpublished: this dissects pfslab's
  reconstruction, specified in docs/protocol.md. The reference implementation is
  pfslab/protocol/codec.py; tests/test_lua_dissector.py checks this file against the same
  test vectors (tests/vectors/cppdp.json).

  Install:  make wireshark-plugin   (copies it to ~/.local/lib/wireshark/plugins/)
  One-off:  tshark -X lua_script:pfslab/dissect/cppdp.lua -r capture.pcap
  Filters:  cppdp   cppdp.type == 1   cppdp.xid == 0x080027f8   cppdp && tcp   cppdp.malformed

  UDP datagrams and TCP frames that do not start with the magic "CPDP" are foreign: the
  dissector returns 0 so Wireshark shows them as data (or lets another dissector try).
  Anything else that breaks the format is dissected as far as it goes and flagged with the
  expert info cppdp.malformed; the Info column then ends in "[malformed: why]".
]]

local PORT = 4051
local MAGIC = "CPDP"
local HEADER_LEN = 24         -- UDP datagram header
local FRAME_HEADER_LEN = 10   -- TCP frame header
local MAX_NAME = 64
local MAX_FRAME = 65536

local MSG_TYPES = { [1] = "CLAIM", [2] = "ROOT", [3] = "JOIN", [4] = "OFFER", [5] = "REFUSE",
                    [6] = "READY" }
local FRAME_TYPES = { [0x11] = "REQUEST", [0x12] = "HOLD", [0x13] = "HEADER", [0x14] = "DATA",
                      [0x15] = "END", [0x16] = "ABORT" }
local REFUSE_REASONS = { [1] = "FULL", [2] = "NOT_ROOT", [3] = "UNKNOWN", [4] = "MAP_MISMATCH" }
local ABORT_REASONS = { [1] = "FULL", [2] = "UNKNOWN", [3] = "UPSTREAM", [4] = "BAD_DIGEST",
                        [5] = "SHUTDOWN", [6] = "PROTOCOL" }
local READY_SOURCES = { [0] = "TFTP", [1] = "peer" }
local BODY_LEN = { [1] = 1, [2] = 4, [3] = 4, [4] = 6, [5] = 1, [6] = 5 }
local FRAME_FIXED = { [0x12] = 8, [0x13] = 36, [0x15] = 0 }

local cppdp = Proto("CPPDP", "Cisco Peer to Peer Distribution Protocol (pfslab reconstruction)")

local f = {
    magic       = ProtoField.string("cppdp.magic", "Magic"),
    version     = ProtoField.uint8("cppdp.version", "Version", base.DEC),
    type        = ProtoField.uint8("cppdp.type", "Type", base.DEC, MSG_TYPES),
    length      = ProtoField.uint16("cppdp.length", "Length", base.DEC),
    xid         = ProtoField.uint32("cppdp.xid", "XID", base.HEX),
    strength    = ProtoField.uint32("cppdp.strength", "Strength", base.HEX),
    map         = ProtoField.uint32("cppdp.map", "Map (CRC-32 of the load name)", base.HEX),
    hash        = ProtoField.uint32("cppdp.hash", "H (CRC-32 of the file name)", base.HEX),
    model       = ProtoField.string("cppdp.model", "Model"),
    file        = ProtoField.string("cppdp.file", "File"),
    name_len    = ProtoField.uint8("cppdp.name_length", "Name length", base.DEC),
    ad          = ProtoField.uint8("cppdp.ad", "Ad (0 = the offer)", base.DEC),
    server      = ProtoField.ipv4("cppdp.server", "TFTP server"),
    lost_parent = ProtoField.ipv4("cppdp.lost_parent", "Lost parent"),
    parent      = ProtoField.ipv4("cppdp.parent", "Parent"),
    slot        = ProtoField.uint8("cppdp.slot", "Slot", base.DEC),
    depth       = ProtoField.uint8("cppdp.depth", "Depth", base.DEC),
    -- REFUSE and ABORT reasons differ: the name is appended to the item's text
    reason      = ProtoField.uint8("cppdp.reason", "Reason", base.DEC),
    source      = ProtoField.uint8("cppdp.source", "Source", base.DEC, READY_SOURCES),
    size        = ProtoField.uint32("cppdp.size", "Size", base.DEC),
    extra       = ProtoField.bytes("cppdp.extra", "Unexpected bytes"),
    frame_type  = ProtoField.uint8("cppdp.frame.type", "Frame type", base.HEX, FRAME_TYPES),
    frame_len   = ProtoField.uint32("cppdp.frame.length", "Frame payload length", base.DEC),
    have        = ProtoField.uint32("cppdp.have", "Have (bytes)", base.DEC),
    total       = ProtoField.uint32("cppdp.total", "Total (bytes, 0 = unknown)", base.DEC),
    sha256      = ProtoField.bytes("cppdp.sha256", "SHA-256"),
    data        = ProtoField.bytes("cppdp.data", "Data"),
    text        = ProtoField.string("cppdp.text", "Text"),
}
cppdp.fields = { f.magic, f.version, f.type, f.length, f.xid, f.strength, f.map, f.hash,
                 f.model, f.file, f.name_len, f.ad, f.server, f.lost_parent, f.parent, f.slot,
                 f.depth, f.reason, f.source, f.size, f.extra, f.frame_type, f.frame_len,
                 f.have, f.total, f.sha256, f.data, f.text }

local ef_malformed = ProtoExpert.new("cppdp.malformed", "Malformed CPPDP message",
                                     expert.group.MALFORMED, expert.severity.ERROR)
local ef_internal = ProtoExpert.new("cppdp.internal_error", "pfslab Lua dissector error",
                                    expert.group.MALFORMED, expert.severity.ERROR)
cppdp.experts = { ef_malformed, ef_internal }

cppdp.prefs.desegment = Pref.bool("Reassemble frames spanning TCP segments", true,
    "Reassemble CPPDP TCP frames split across segments (TCP's \"Allow subdissectors to " ..
    "reassemble TCP streams\" must be on too)")

------------------------------------------------------------------------------ helpers

local function printable(s)
    return s:find("[^\33-\126]") == nil
end

-- Hostile bytes shown safely: printable ASCII as is, anything else as \xNN.
local function shown(s)
    return (s:gsub("[^\32-\126]", function(c) return string.format("\\x%02x", c:byte()) end))
end

local function ipstr(tvb, off)
    return string.format("%d.%d.%d.%d", tvb(off, 1):uint(), tvb(off + 1, 1):uint(),
                         tvb(off + 2, 1):uint(), tvb(off + 3, 1):uint())
end

local function u8(tvb, off) return tvb(off, 1):uint() end
local function u16(tvb, off) return tvb(off, 2):uint() end
local function u32(tvb, off) return tvb(off, 4):uint() end

-- The format rules of docs/protocol.md, in the order and words of the Scapy layers
-- (pfslab/dissect/scapy_cppdp.py udp_problem / frame_problem).
local function udp_problem(tvb)
    local L = tvb:len()
    if L < HEADER_LEN then
        return string.format("truncated: %d bytes < %d-byte header", L, HEADER_LEN)
    end
    if tvb:raw(0, 4) ~= MAGIC then return "bad magic" end
    local ver = u8(tvb, 4)
    if ver ~= 1 then return "unsupported version " .. ver end
    local t = u8(tvb, 5)
    if not MSG_TYPES[t] then return "unknown message type " .. t end
    local length = u16(tvb, 6)
    if length ~= L then
        return string.format("length field %d != datagram size %d", length, L)
    end
    local off = HEADER_LEN
    for _, what in ipairs({ "model", "file" }) do
        if off >= L then return "truncated in " .. what end
        local n = u8(tvb, off)
        if n > MAX_NAME or off + 1 + n > L then
            return string.format("bad %s length %d", what, n)
        end
        if n > 0 and not printable(tvb:raw(off + 1, n)) then
            return what .. " is not printable ASCII"
        end
        off = off + 1 + n
    end
    if L - off ~= BODY_LEN[t] then
        return string.format("%s body is %d bytes, expected %d", MSG_TYPES[t], L - off,
                             BODY_LEN[t])
    end
    return nil
end

local function frame_problem(tvb)
    local L = tvb:len()
    if L < FRAME_HEADER_LEN then
        return string.format("truncated: %d bytes < %d-byte header", L, FRAME_HEADER_LEN)
    end
    if tvb:raw(0, 4) ~= MAGIC then return "bad magic" end
    local ver = u8(tvb, 4)
    if ver ~= 1 then return "unsupported version " .. ver end
    local t = u8(tvb, 5)
    if not FRAME_TYPES[t] then return string.format("unknown frame type 0x%x", t) end
    local n = u32(tvb, 6)
    if n > MAX_FRAME then return string.format("frame payload %d > %d", n, MAX_FRAME) end
    local plen = L - FRAME_HEADER_LEN
    if plen < n then return string.format("truncated: payload %d of %d bytes", plen, n) end
    if plen > n then return string.format("%d bytes beyond the frame length", plen - n) end
    if FRAME_FIXED[t] and n ~= FRAME_FIXED[t] then
        return string.format("%s payload is %d bytes, expected %d", FRAME_TYPES[t], n,
                             FRAME_FIXED[t])
    end
    local P = FRAME_HEADER_LEN
    if t == 0x11 then
        local off = 4
        for _, what in ipairs({ "model", "file" }) do
            if off >= plen then return "REQUEST truncated in " .. what end
            local k = u8(tvb, P + off)
            if k > MAX_NAME or off + 1 + k > plen or
               (k > 0 and not printable(tvb:raw(P + off + 1, k))) then
                return "REQUEST has a bad " .. what
            end
            off = off + 1 + k
        end
        if off ~= plen then return "REQUEST has trailing bytes" end
    elseif t == 0x16 then
        if plen < 2 or u8(tvb, P + 1) ~= plen - 2 or u8(tvb, P + 1) > MAX_NAME then
            return "ABORT has a bad length"
        end
    end
    return nil
end

-- Adds a length-prefixed name at off (as much of it as there is); returns the name and
-- the offset after it, or nil and L when not even the length byte is there.
local function add_name(tvb, tree, field, off)
    local L = tvb:len()
    if off >= L then return nil, L end
    local n = u8(tvb, off)
    local avail = math.min(n, L - off - 1)
    local s = avail > 0 and tvb:raw(off + 1, avail) or ""
    local item = tree:add(field, tvb(off, 1 + avail), shown(s))
    item:add(f.name_len, tvb(off, 1))
    return s, off + 1 + avail
end

local function add_extra(tvb, tree, off)
    if off < tvb:len() then tree:add(f.extra, tvb(off)) end
end

------------------------------------------------------------------------------ UDP

local function udp_summary(v)
    local xid = string.format("XID%08X", v.xid or 0)
    local m = "m=" .. shown(v.model or "")
    local file = shown(v.file or "")
    local t = v.type
    if t == 1 then
        local what = (v.ad or 0) == 0 and "offer" or ("Ad " .. v.ad)
        return string.format("PFS ClaimRoot(tent) %s %s %s %s", what, xid, m, file)
    elseif t == 2 then
        return string.format("PFS ROOT %s H=%08X %s ROOT=%s %s", xid, v.hash or 0, m,
                             v.server or "0.0.0.0", file)
    elseif t == 3 then
        local lost = v.lost_parent or "0.0.0.0"
        return string.format("PFS JOIN %s %s %s", xid, m, file) ..
               (lost ~= "0.0.0.0" and (" lost=" .. lost) or "")
    elseif t == 4 then
        return string.format("PFS OFFER %s %s parent=%s slot=%d depth=%d %s", xid, m,
                             v.parent or "0.0.0.0", v.slot or 0, v.depth or 0, file)
    elseif t == 5 then
        local r = v.reason or 0
        return string.format("PFS REFUSE %s %s %s %s", REFUSE_REASONS[r] or tostring(r), xid,
                             m, file)
    elseif t == 6 then
        local src = v.source or 0
        return string.format("PFS READY %s %s %s size=%d from=%s", xid, m, file, v.size or 0,
                             READY_SOURCES[src] or tostring(src))
    end
    return string.format("PFS type=%d %s", t or 0, xid)
end

local function dissect_udp(tvb, pinfo, root)
    local L = tvb:len()
    if L < 4 or tvb:raw(0, 4) ~= MAGIC then return 0 end  -- foreign: not ours
    pinfo.cols.protocol:set("CPPDP")
    local tree = root:add(cppdp, tvb())
    local v = {}
    tree:add(f.magic, tvb(0, 4))
    if L >= 5 then tree:add(f.version, tvb(4, 1)) end
    if L >= 6 then v.type = u8(tvb, 5); tree:add(f.type, tvb(5, 1)) end
    if L >= 8 then tree:add(f.length, tvb(6, 2)) end
    if L >= 12 then v.xid = u32(tvb, 8); tree:add(f.xid, tvb(8, 4)) end
    if L >= 16 then tree:add(f.strength, tvb(12, 4)) end
    if L >= 20 then tree:add(f.map, tvb(16, 4)) end
    local off = L
    if L >= 24 then
        v.hash = u32(tvb, 20)
        tree:add(f.hash, tvb(20, 4))
        v.model, off = add_name(tvb, tree, f.model, 24)
        v.file, off = add_name(tvb, tree, f.file, off)
    end
    local t = v.type
    local rest = L - off
    if t == 1 and rest >= 1 then
        v.ad = u8(tvb, off); tree:add(f.ad, tvb(off, 1)); off = off + 1
    elseif t == 2 and rest >= 4 then
        v.server = ipstr(tvb, off); tree:add(f.server, tvb(off, 4)); off = off + 4
    elseif t == 3 and rest >= 4 then
        v.lost_parent = ipstr(tvb, off); tree:add(f.lost_parent, tvb(off, 4)); off = off + 4
    elseif t == 4 and rest >= 6 then
        v.parent = ipstr(tvb, off); tree:add(f.parent, tvb(off, 4))
        v.slot = u8(tvb, off + 4); tree:add(f.slot, tvb(off + 4, 1))
        v.depth = u8(tvb, off + 5); tree:add(f.depth, tvb(off + 5, 1))
        off = off + 6
    elseif t == 5 and rest >= 1 then
        v.reason = u8(tvb, off)
        tree:add(f.reason, tvb(off, 1)):append_text(
            " (" .. (REFUSE_REASONS[v.reason] or "?") .. ")")
        off = off + 1
    elseif t == 6 and rest >= 5 then
        v.source = u8(tvb, off); tree:add(f.source, tvb(off, 1))
        v.size = u32(tvb, off + 1); tree:add(f.size, tvb(off + 1, 4))
        off = off + 5
    end
    add_extra(tvb, tree, off)

    local s = udp_summary(v)
    local bad = udp_problem(tvb)
    if bad then
        s = s .. " [malformed: " .. bad .. "]"
        tree:add_proto_expert_info(ef_malformed, "Malformed CPPDP datagram: " .. bad)
    end
    tree:append_text(", " .. s)
    pinfo.cols.info:set(s)
    return L
end

------------------------------------------------------------------------------ TCP

local function info_add(pinfo, s)
    -- Several frames in one segment: "PFS HEADER ... / PFS DATA ... / PFS END"
    local ok, cur = pcall(tostring, pinfo.cols.info)
    if ok and cur and cur:sub(1, 4) == "PFS " then
        pinfo.cols.info:append(" / " .. s)
    else
        pinfo.cols.info:set(s)
    end
end

-- dissect_tcp_pdus: the length of the frame at offset (header included). Foreign or
-- impossible headers take the rest of the segment, to be shown as one malformed frame.
local function get_frame_len(tvb, pinfo, offset)
    local rest = tvb:len() - offset
    if tvb:raw(offset, 4) ~= MAGIC then return rest end
    local n = tvb(offset + 6, 4):uint()
    if n > MAX_FRAME then return rest end
    return FRAME_HEADER_LEN + n
end

local function dissect_frame(tvb, pinfo, root)
    local L = tvb:len()
    pinfo.cols.protocol:set("CPPDP")
    local tree = root:add(cppdp, tvb())
    local v = {}
    if L >= 4 then tree:add(f.magic, tvb(0, 4)) end
    if L >= 5 then tree:add(f.version, tvb(4, 1)) end
    if L >= 6 then v.type = u8(tvb, 5); tree:add(f.frame_type, tvb(5, 1)) end
    if L >= 10 then v.length = u32(tvb, 6); tree:add(f.frame_len, tvb(6, 4)) end
    local P = FRAME_HEADER_LEN
    local off = math.min(L, P)
    local t = v.type
    local plen = math.max(0, L - P)
    if L >= P and t ~= nil then
        if t == 0x11 and plen >= 4 then
            v.xid = u32(tvb, P); tree:add(f.xid, tvb(P, 4))
            v.model, off = add_name(tvb, tree, f.model, P + 4)
            v.file, off = add_name(tvb, tree, f.file, off)
        elseif t == 0x12 and plen >= 8 then
            v.have = u32(tvb, P); tree:add(f.have, tvb(P, 4))
            v.total = u32(tvb, P + 4); tree:add(f.total, tvb(P + 4, 4))
            off = P + 8
        elseif t == 0x13 and plen >= 4 then
            v.size = u32(tvb, P); tree:add(f.size, tvb(P, 4))
            off = P + 4
            if plen >= 36 then
                v.sha256 = tostring(tvb(P + 4, 32):bytes()):lower()
                tree:add(f.sha256, tvb(P + 4, 32))
                off = P + 36
            end
        elseif t == 0x14 then
            if plen > 0 then tree:add(f.data, tvb(P)) end
            off = L
        elseif t == 0x16 and plen >= 1 then
            v.reason = u8(tvb, P)
            tree:add(f.reason, tvb(P, 1)):append_text(
                " (" .. (ABORT_REASONS[v.reason] or "?") .. ")")
            v.text, off = add_name(tvb, tree, f.text, P + 1)
        end
    end
    add_extra(tvb, tree, off)

    local s
    if t == 0x11 then
        s = string.format("PFS REQUEST XID%08X m=%s %s", v.xid or 0, shown(v.model or ""),
                          shown(v.file or ""))
    elseif t == 0x12 then
        s = string.format("PFS HOLD have=%d total=%d", v.have or 0, v.total or 0)
    elseif t == 0x13 then
        s = string.format("PFS HEADER size=%d sha256=%s", v.size or 0,
                          (v.sha256 or string.rep("0", 64)):sub(1, 16))
    elseif t == 0x14 then
        s = string.format("PFS DATA %d bytes", v.length or plen)
    elseif t == 0x15 then
        s = "PFS END"
    elseif t == 0x16 then
        local r = v.reason or 0
        s = string.format("PFS ABORT %s \"%s\"", ABORT_REASONS[r] or tostring(r),
                          shown(v.text or ""))
    else
        s = string.format("PFS frame type=0x%x", t or 0)
    end
    local bad = frame_problem(tvb)
    if bad then
        s = s .. " [malformed: " .. bad .. "]"
        tree:add_proto_expert_info(ef_malformed, "Malformed CPPDP frame: " .. bad)
    end
    tree:append_text(", " .. s)
    info_add(pinfo, s)
    return L
end

local function dissect_tcp(tvb, pinfo, root)
    local L = tvb:len()
    local k = math.min(L, 4)
    if k == 0 or tvb:raw(0, k) ~= MAGIC:sub(1, k) then return 0 end  -- foreign: not ours
    dissect_tcp_pdus(tvb, root, FRAME_HEADER_LEN, get_frame_len, dissect_frame,
                     cppdp.prefs.desegment)
    return L
end

------------------------------------------------------------------------------ entry point

local PT_TCP = 2  -- epan/address.h port_type

function cppdp.dissector(tvb, pinfo, root)
    local tcp = pinfo.port_type == PT_TCP
    local ok, ret = pcall(tcp and dissect_tcp or dissect_udp, tvb, pinfo, root)
    if ok then return ret end
    -- Never let hostile bytes surface as a Lua error: flag the packet instead.
    local item = root:add(cppdp, tvb())
    item:add_proto_expert_info(ef_internal, "pfslab Lua dissector error: " .. tostring(ret))
    return tvb:len()
end

DissectorTable.get("udp.port"):add(PORT, cppdp)
DissectorTable.get("tcp.port"):add(PORT, cppdp)
