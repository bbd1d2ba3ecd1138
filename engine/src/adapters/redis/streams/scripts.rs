//! The Lua scripts of the queue: each settle checks, atomically with its
//! effect, that the caller still holds the lock (the entry is pending for
//! it with the delivery counter it received); receive, depth and prune do
//! their several steps in one round trip.

use ::redis::Script;

/// Lua prelude of the settling scripts: returns 0 unless entry `ARGV[3]` is
/// pending for consumer `ARGV[2]` of group `ARGV[1]` with delivery counter
/// `ARGV[4]`.
pub(super) const LOCK_CHECK: &str = r#"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if not p[1] or p[1][2] ~= ARGV[2] or tonumber(p[1][4]) ~= tonumber(ARGV[4]) then
  return 0
end
"#;

/// `complete` and `dead_letter`: KEYS stream; ARGV group, consumer, entry, counter.
pub(super) const SETTLE: &str = r#"
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
return 1
"#;

/// `renew`: KEYS stream; ARGV group, consumer, entry, counter.
pub(super) const RENEW: &str = r#"
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"#;

/// `abandon`: KEYS stream, delayed set; ARGV group, consumer, entry, counter,
/// delay ms, max len (0: none). Returns 1, or 2 when the entry itself had
/// already been trimmed away (then it is only acked).
pub(super) const ABANDON: &str = r#"
local e = redis.call('XRANGE', KEYS[1], ARGV[3], ARGV[3])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
if not e[1] or not e[1][2] then
  return 2
end
local fields = e[1][2]
local prior = 0
local copy = {}
for i = 1, #fields, 2 do
  if fields[i] == 'delivery_count' then
    prior = tonumber(fields[i + 1]) or 0
  else
    table.insert(copy, fields[i])
    table.insert(copy, fields[i + 1])
  end
end
table.insert(copy, 'delivery_count')
table.insert(copy, string.format('%d', prior + tonumber(ARGV[4])))
local delay = tonumber(ARGV[5])
if delay > 0 then
  local t = redis.call('TIME')
  local due = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + delay
  redis.call('ZADD', KEYS[2], string.format('%d', due), cjson.encode({e = ARGV[3], f = copy}))
elseif tonumber(ARGV[6]) > 0 then
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[6], '*', unpack(copy))
else
  redis.call('XADD', KEYS[1], '*', unpack(copy))
end
return 1
"#;

/// One poll of `receive`: KEYS stream, delayed set; ARGV group, consumer,
/// min idle ms, count, max len (0: none), promote batch, `XAUTOCLAIM` start
/// cursor. Returns `{next cursor, {{entry id, {field, value, ...}, times
/// delivered}, ...}}`.
pub(super) const RECEIVE: &str = r#"
local stream, delayed = KEYS[1], KEYS[2]
local group, consumer = ARGV[1], ARGV[2]
local count = tonumber(ARGV[4])
local maxlen = tonumber(ARGV[5])

-- 1. Delayed messages that are due go back to the stream.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', string.format('%d', now), 'LIMIT', 0, ARGV[6])
for _, member in ipairs(due) do
  local ok, m = pcall(cjson.decode, member)
  if ok and type(m) == 'table' and type(m.f) == 'table' and #m.f > 0 then
    if maxlen > 0 then
      redis.call('XADD', stream, 'MAXLEN', '~', ARGV[5], '*', unpack(m.f))
    else
      redis.call('XADD', stream, '*', unpack(m.f))
    end
  end
  redis.call('ZREM', delayed, member)
end

-- 2. Entries whose lock expired (idle too long), from any consumer.
-- The scan resumes where the previous poll stopped, so that over a few
-- polls it covers the whole PEL however many entries are in flight.
local out = {}
local cursor = ARGV[7]
for _ = 1, 10 do
  local r = redis.call('XAUTOCLAIM', stream, group, consumer, ARGV[3], cursor, 'COUNT', count - #out)
  cursor = r[1]
  for _, e in ipairs(r[2]) do
    if e[2] then
      local p = redis.call('XPENDING', stream, group, e[1], e[1], 1)
      local n = 1
      if p[1] then n = tonumber(p[1][4]) end
      table.insert(out, {e[1], e[2], n})
    else
      -- Redis 6.2 reports entries deleted meanwhile with nil fields.
      redis.call('XACK', stream, group, e[1])
    end
  end
  if #out >= count or cursor == '0-0' then break end
end
if #out > 0 then return {cursor, out} end

-- 3. New entries, without blocking.
local r = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count, 'STREAMS', stream, '>')
if r and r[1] then
  for _, e in ipairs(r[1][2]) do
    table.insert(out, {e[1], e[2], 1})
  end
end
return {cursor, out}
"#;

/// `depth` and `pending`: KEYS stream, delayed set; ARGV group.
/// Returns `{group found (0/1), lag (-1: unknown), xlen, pending, delayed}`.
pub(super) const DEPTH: &str = r#"
local delayed = redis.call('ZCARD', KEYS[2])
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, -1, 0, 0, delayed}
end
local xlen = redis.call('XLEN', KEYS[1])
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
for _, g in ipairs(groups) do
  local name, pending, lag
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1]
    elseif g[i] == 'pending' then pending = g[i + 1]
    elseif g[i] == 'lag' then lag = g[i + 1] end
  end
  if name == ARGV[1] then
    if type(lag) ~= 'number' then lag = -1 end
    return {1, lag, xlen, pending or 0, delayed}
  end
end
return {0, -1, xlen, 0, delayed}
"#;

/// Removes consumers with nothing pending, idle longer than `ARGV[2]` ms,
/// other than `ARGV[3]`. KEYS stream; ARGV group, idle ms, own consumer.
pub(super) const PRUNE: &str = r#"
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if not ok then return 0 end
local removed = 0
for _, c in ipairs(consumers) do
  local name, pending, idle
  for i = 1, #c, 2 do
    if c[i] == 'name' then name = c[i + 1]
    elseif c[i] == 'pending' then pending = c[i + 1]
    elseif c[i] == 'idle' then idle = c[i + 1] end
  end
  if name and name ~= ARGV[3] and pending == 0 and idle and idle > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
    removed = removed + 1
  end
end
return removed
"#;

pub(super) struct Scripts {
    pub(super) receive: Script,
    pub(super) settle: Script,
    pub(super) abandon: Script,
    pub(super) renew: Script,
    pub(super) depth: Script,
    pub(super) prune: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            receive: Script::new(RECEIVE),
            settle: Script::new(&format!("{LOCK_CHECK}{SETTLE}")),
            abandon: Script::new(&format!("{LOCK_CHECK}{ABANDON}")),
            renew: Script::new(&format!("{LOCK_CHECK}{RENEW}")),
            depth: Script::new(DEPTH),
            prune: Script::new(PRUNE),
        }
    }
}
