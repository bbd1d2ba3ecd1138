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

/// One poll of `receive` over the streams of several partitions: KEYS
/// `stream, delayed` pairs; ARGV group, consumer, count, max len (0: none),
/// promote batch, then per stream its `XAUTOCLAIM` start cursor, its min
/// idle ms (`-1`: do not scan this poll) and whether to promote its due
/// delayed messages this poll (`1`/`0`). Returns `{{next cursor or '' when not scanned, ...}, {{entry id,
/// {field, value, ...}, times delivered, stream index (1-based)}, ...}}`.
pub(super) const RECEIVE: &str = r#"
local group, consumer = ARGV[1], ARGV[2]
local count = tonumber(ARGV[3])
local maxlen = tonumber(ARGV[4])
local n = #KEYS / 2

-- 1. Delayed messages that are due go back to their stream (for the
-- streams whose delayed set is looked at this poll).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, n do
  local stream, delayed = KEYS[2 * i - 1], KEYS[2 * i]
  local due = {}
  if ARGV[6 + 3 * (i - 1) + 2] == '1' then
    due = redis.call('ZRANGEBYSCORE', delayed, '-inf', string.format('%d', now), 'LIMIT', 0, ARGV[5])
  end
  for _, member in ipairs(due) do
    local ok, m = pcall(cjson.decode, member)
    if ok and type(m) == 'table' and type(m.f) == 'table' and #m.f > 0 then
      if maxlen > 0 then
        redis.call('XADD', stream, 'MAXLEN', '~', ARGV[4], '*', unpack(m.f))
      else
        redis.call('XADD', stream, '*', unpack(m.f))
      end
    end
    redis.call('ZREM', delayed, member)
  end
end

-- 2. Entries whose lock expired (idle longer than the stream's min idle:
-- the lock duration, or 0 for a partition just taken over), from any
-- consumer. Each scan resumes where the previous poll stopped, so that
-- over a few polls it covers the whole PEL however many are in flight.
local out = {}
local cursors = {}
for i = 1, n do
  local stream = KEYS[2 * i - 1]
  local cursor = ARGV[6 + 3 * (i - 1)]
  local idle = ARGV[6 + 3 * (i - 1) + 1]
  if #out < count and idle ~= '-1' then
    for _ = 1, 10 do
      local r = redis.call('XAUTOCLAIM', stream, group, consumer, idle, cursor, 'COUNT', count - #out)
      cursor = r[1]
      for _, e in ipairs(r[2]) do
        if e[2] then
          local p = redis.call('XPENDING', stream, group, e[1], e[1], 1)
          local times = 1
          if p[1] then times = tonumber(p[1][4]) end
          table.insert(out, {e[1], e[2], times, i})
        else
          -- Redis 6.2 reports entries deleted meanwhile with nil fields.
          redis.call('XACK', stream, group, e[1])
        end
      end
      if #out >= count or cursor == '0-0' then break end
    end
    cursors[i] = cursor
  else
    cursors[i] = ''
  end
end
if #out > 0 then return {cursors, out} end

-- 3. New entries, without blocking.
for i = 1, n do
  if #out >= count then break end
  local stream = KEYS[2 * i - 1]
  local r = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count - #out, 'STREAMS', stream, '>')
  if r and r[1] then
    for _, e in ipairs(r[1][2]) do
      table.insert(out, {e[1], e[2], 1, i})
    end
  end
end
return {cursors, out}
"#;

/// `depth` and `pending` over every partition: KEYS `stream, delayed`
/// pairs; ARGV group. Returns `{waiting, pending}`: waiting = not yet
/// delivered to the group (its `lag` when Redis knows it, else `XLEN −
/// pending`, exact here because settled entries are deleted with their ack)
/// + the delayed sets; pending = the groups' PELs.
pub(super) const DEPTH: &str = r#"
local waiting, pending = 0, 0
for i = 1, #KEYS / 2 do
  local stream, delayed = KEYS[2 * i - 1], KEYS[2 * i]
  waiting = waiting + redis.call('ZCARD', delayed)
  if redis.call('EXISTS', stream) == 1 then
    local xlen = redis.call('XLEN', stream)
    local found, lag, pend = false, nil, 0
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
      local name, p, l
      for j = 1, #g, 2 do
        if g[j] == 'name' then name = g[j + 1]
        elseif g[j] == 'pending' then p = g[j + 1]
        elseif g[j] == 'lag' then l = g[j + 1] end
      end
      if name == ARGV[1] then
        found, lag, pend = true, l, p or 0
      end
    end
    if not found then
      waiting = waiting + xlen
    elseif type(lag) == 'number' and lag >= 0 then
      waiting = waiting + lag
    else
      waiting = waiting + math.max(xlen - pend, 0)
    end
    pending = pending + pend
  end
end
return {waiting, pending}
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
