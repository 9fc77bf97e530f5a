import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';

/**
 * The Lua scripts of the transport. Each one runs atomically in Redis, which is what the ordering and ownership
 * rules below rely on.
 *
 * Per-stream order within a group: every entry delivered to a group is put, in the same script as the XREADGROUP
 * that delivers it, into the group's *order index* of its stream (`<prefix>:order:<group>:<streamId>`, a sorted set
 * of the stream's delivered and unacknowledged entry ids, sorted by id). An entry may run only when it is the head of
 * that index, i.e. when no earlier entry of its stream is pending in the group. Entries are delivered in id order, so
 * once an entry is the head it stays the head until it is acknowledged. The group's pending entries list (PEL) is the
 * authority: an index member that is no longer pending (trimmed, or lost with the group) is pruned when met.
 *
 * An entry that waits behind another member's entry of its stream stays with the member that read it; when the other
 * member acknowledges its entry and the waiting one becomes the head, the acknowledgement wakes the waiting member
 * (an entry on its wake stream, `<prefix>:wake:<group>:<consumer>`, which its blocking read watches).
 */

/** Helpers shared by the scripts (KEYS[1] is always the events stream, ARGV[1] the group, ARGV[2] the consumer). */
const HELPERS = `
local stream = KEYS[1]
local group = ARGV[1]
local consumer = ARGV[2]

-- Entry ids sort in the index as zero-padded text ("ms-seq" → 20 digits each), followed by the id itself.
local function member(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return string.rep('0', 20 - #ms) .. ms .. '-' .. string.rep('0', 20 - #seq) .. seq .. '|' .. id
end

local function member_id(m)
  return string.match(m, '|(.+)$')
end

local function group_exists()
  if redis.call('EXISTS', stream) == 0 then return false end
  for _, info in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    for i = 1, #info, 2 do
      if info[i] == 'name' and info[i + 1] == group then return true end
    end
  end
  return false
end

-- The consumer holding a pending entry and its delivery count, or nil when the entry is not pending in the group.
local function pending(id)
  local p = redis.call('XPENDING', stream, group, id, id, 1)
  if p[1] then return p[1][2], p[1][4] end
  return nil, 0
end

-- The earliest entry of an order index still pending in the group (stale members are removed on the way).
local function head(key)
  while true do
    local first = redis.call('ZRANGE', key, 0, 0)[1]
    if not first then return nil end
    local id = member_id(first)
    if pending(id) then return id end
    redis.call('ZREM', key, first)
  end
end

local function fields_of(flat)
  local f = {}
  for i = 1, #flat, 2 do f[flat[i]] = flat[i + 1] end
  return f
end

-- Subject filters, exactly like subjectMatches in eventline: ARGV[filters_at] is the count, then the filters.
local function matcher(filters_at)
  local count = tonumber(ARGV[filters_at])
  local filters = {}
  for i = 1, count do filters[i] = ARGV[filters_at + i] end
  return function(subject)
    if count == 0 then return true end
    subject = subject or ''
    for _, f in ipairs(filters) do
      if f == subject then return true end
      if #f >= 2 and string.sub(f, -2) == '.*' then
        local prefix = string.sub(f, 1, #f - 1)
        if string.sub(subject, 1, #prefix) == prefix then return true end
      end
    end
    return false
  end
end
`;

/**
 * KEYS: stream, chain key. ARGV: de-duplication key prefix, window (ms), MAXLEN ('' for none), this call's place in
 * its chain (0, 1, ...), 1 when it is the last of the chain, then the messages as one MessagePack array of strings,
 * five per message: id, subject, streamId, body, headers (see packStrings; one argument instead of five per message
 * spares the client most of its work encoding the command, and Redis unpacks it in C). Adds each message whose id was not seen within the window, in the given order, and returns how many were
 * added, or -1 without adding anything when the previous call of its chain did not complete.
 *
 * A publish sends its batch as a chain of calls without waiting between them (Redis runs one while the client sends
 * the next). Each call but the last records its place in the chain key; a call whose predecessor is not recorded there
 * (it failed, or never ran) adds nothing. So, as with one call for the batch, a failure never leaves a later message
 * stored before an earlier one: the retry drops what was stored and appends the rest in order.
 *
 * Published ids are remembered in one hash per window-long time bucket (`<prefix>:dedupe:<bucket>`, by the Redis
 * server's clock) that expires two windows after its bucket began; an id in the current or the previous bucket is a
 * duplicate, so an id is remembered for at least one window and at most two. (A hash field per id costs Redis about a
 * quarter less than a key with its own expiry, `SET NX PX`, per id.) The call looks its ids up in both buckets at once
 * (`HMGET`), and records those it added at the end (`HSET`). A call is atomic up to a failure, which stops it at a
 * message: no later message of the call, or of the chain, is added, and the ids of the messages it did add, and only
 * those, are recorded before the error is returned (so that publishing the batch again adds exactly the rest).
 */
const PUBLISH = `
local place = tonumber(ARGV[4])
if place > 0 and redis.call('GET', KEYS[2]) ~= tostring(place - 1) then return -1 end
local now = redis.call('TIME')
local window = tonumber(ARGV[2])
local bucket = math.floor((tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)) / window)
local current = ARGV[1] .. bucket
local previous = ARGV[1] .. (bucket - 1)
local F = cmsgpack.unpack(ARGV[6])
local ids = {}
for i = 1, #F, 5 do ids[#ids + 1] = F[i] end
local inPrevious, inCurrent = {}, {}
if #ids > 0 then
  inPrevious = redis.call('HMGET', previous, unpack(ids))
  inCurrent = redis.call('HMGET', current, unpack(ids))
end
local seen = {}
local added = {}
local failure = nil
for j = 1, #ids do
  local id = ids[j]
  if not inPrevious[j] and not inCurrent[j] and not seen[id] then
    local i = j * 5 - 4
    local reply
    if ARGV[3] ~= '' then
      reply = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'id', id, 'subject', F[i + 1], 'streamId', F[i + 2], 'body', F[i + 3], 'headers', F[i + 4])
    else
      reply = redis.pcall('XADD', KEYS[1], '*', 'id', id, 'subject', F[i + 1], 'streamId', F[i + 2], 'body', F[i + 3], 'headers', F[i + 4])
    end
    if type(reply) == 'table' and reply.err then
      failure = reply
      break
    end
    added[#added + 1] = id
    added[#added + 1] = '1'
  end
  seen[id] = true
end
if #added > 0 then
  redis.call('HSET', current, unpack(added))
  redis.call('PEXPIREAT', current, (bucket + 2) * window)
end
if failure then return failure end
if ARGV[5] == '1' then
  if place > 0 then redis.call('DEL', KEYS[2]) end
else
  redis.call('SET', KEYS[2], tostring(place), 'PX', 60000)
end
return #added / 2
`;

/**
 * ARGV: group, consumer, count, order key prefix, filter count, filters...
 * Creates the group at 0 when Redis lost it, reads new entries for the consumer, acknowledges those the filters skip,
 * and indexes the others. Returns {1, {{id, fields, isHead}, ...}} or, when there was nothing new,
 * {0, last generated id of the stream} (what a blocking XREAD waits after).
 */
const READ = `${HELPERS}
if not group_exists() then redis.call('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM') end
local res = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', ARGV[3], 'STREAMS', stream, '>')
if not res then
  local info = redis.call('XINFO', 'STREAM', stream)
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then return {0, info[i + 1]} end
  end
  return {0, '0-0'}
end
local matches = matcher(5)
local out = {}
for _, entry in ipairs(res[1][2]) do
  local id, flat = entry[1], entry[2]
  local f = fields_of(flat)
  if matches(f.subject) then
    local key = ARGV[4] .. (f.streamId or '')
    redis.call('ZADD', key, 0, member(id))
    out[#out + 1] = {id, flat, head(key) == id and 1 or 0}
  else
    redis.call('XACK', stream, group, id)
  end
end
return {1, out}
`;

/**
 * ARGV: group, consumer, id, order key, wake key prefix, wake key expiry ms. Acknowledges the entry if the consumer
 * still holds it (a late acknowledgement of an entry another member took over is ignored) and returns
 * {1, new head of the stream or ''}; {0, ''} when the entry is no longer the consumer's. When another member holds the
 * new head, it is woken: the head's id is added to its wake stream.
 */
const ACK = `${HELPERS}
if not group_exists() then return {0, ''} end
if pending(ARGV[3]) ~= consumer then return {0, ''} end
redis.call('XACK', stream, group, ARGV[3])
redis.call('ZREM', ARGV[4], member(ARGV[3]))
local next = head(ARGV[4])
if not next then return {1, ''} end
local holder = pending(next)
if holder ~= consumer then
  local wake = ARGV[5] .. holder
  redis.call('XADD', wake, 'MAXLEN', '~', 1000, '*', 'id', next)
  redis.call('PEXPIRE', wake, ARGV[6])
end
return {1, next}
`;

/**
 * ARGV: group, consumer, id. Before a failed entry is delivered again: claims it again (which counts a delivery) if
 * the consumer still holds it. Returns the delivery count, or 0 when the entry is no longer the consumer's.
 */
const RETRY = `${HELPERS}
if not group_exists() then return 0 end
if pending(ARGV[3]) ~= consumer then return 0 end
redis.call('XCLAIM', stream, group, consumer, 0, ARGV[3])
local holder, count = pending(ARGV[3])
if holder ~= consumer then return 0 end
return count
`;

/**
 * ARGV: group, consumer, ids... Keeps the entries the consumer holds and knows of from being taken over (resets their
 * idle time without counting a delivery). Returns the ids it no longer holds.
 */
const TOUCH = `${HELPERS}
local lost = {}
local exists = group_exists()
for i = 3, #ARGV do
  local id = ARGV[i]
  if exists and pending(id) == consumer then
    redis.call('XCLAIM', stream, group, consumer, 0, id, 'JUSTID')
  else
    lost[#lost + 1] = id
  end
end
return lost
`;

/**
 * ARGV: group, consumer, idle ms, then (id, delivery count) pairs. When a consumer stops: marks everything it holds
 * idle for idle ms (more than claimIdleMs), so that another member takes it over on its next reclaim, and leaves
 * the group when it holds nothing. The pairs name entries it held without handing them to its handler: their delivery
 * count is set back so that the member taking them over counts the delivery its handler sees as the first. Returns
 * how many it released.
 */
const RELEASE = `${HELPERS}
if not group_exists() then return 0 end
local unstarted = {}
for i = 4, #ARGV, 2 do unstarted[ARGV[i]] = ARGV[i + 1] end
local held = redis.call('XPENDING', stream, group, '-', '+', 10000, consumer)
for _, p in ipairs(held) do
  if unstarted[p[1]] then
    redis.call('XCLAIM', stream, group, consumer, 0, p[1], 'IDLE', ARGV[3], 'RETRYCOUNT', unstarted[p[1]], 'JUSTID')
  else
    redis.call('XCLAIM', stream, group, consumer, 0, p[1], 'IDLE', ARGV[3], 'JUSTID')
  end
end
if #held == 0 then redis.call('XGROUP', 'DELCONSUMER', stream, group, consumer) end
return #held
`;

/**
 * ARGV: group, consumer, order key prefix, then (id, streamId) pairs. For entries the consumer holds that wait behind
 * an earlier entry of their stream: 1 when it is now the head, 2 when it still waits, 0 when it is no longer the
 * consumer's.
 */
const HEADS = `${HELPERS}
local out = {}
local exists = group_exists()
for i = 4, #ARGV, 2 do
  local id = ARGV[i]
  if not exists or pending(id) ~= consumer then
    out[#out + 1] = 0
  elseif head(ARGV[3] .. ARGV[i + 1]) == id then
    out[#out + 1] = 1
  else
    out[#out + 1] = 2
  end
end
return out
`;

/**
 * ARGV: group, consumer, min idle ms, start id, count, order key prefix, filter count, filters...
 * Takes over entries idle for longer than min idle (left by a dead or stopped member) with XAUTOCLAIM. Returns
 * {next start id, {{id, fields, isHead, deliveryCount}, ...}}.
 */
const RECLAIM = `${HELPERS}
if not group_exists() then return {'0-0', {}} end
local res = redis.call('XAUTOCLAIM', stream, group, consumer, ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local matches = matcher(7)
local out = {}
for _, entry in ipairs(res[2]) do
  local id, flat = entry[1], entry[2]
  if flat then
    local f = fields_of(flat)
    local key = ARGV[6] .. (f.streamId or '')
    if matches(f.subject) then
      redis.call('ZADD', key, 0, member(id))
      local _, count = pending(id)
      out[#out + 1] = {id, flat, head(key) == id and 1 or 0, count}
    else
      redis.call('XACK', stream, group, id)
      redis.call('ZREM', key, member(id))
    end
  end
end
return {res[1], out}
`;

/**
 * ARGV: group, consumer, idle ms. Deletes the group's consumers that hold nothing and were idle for longer than idle
 * ms (left by crashed processes). A consumer deleted while alive is created again by its next read.
 */
const PRUNE = `${HELPERS}
if not group_exists() then return 0 end
local deleted = 0
for _, info in ipairs(redis.call('XINFO', 'CONSUMERS', stream, group)) do
  local c = fields_of(info)
  if tonumber(c.pending) == 0 and c.name ~= consumer and tonumber(c.idle) > tonumber(ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', stream, group, c.name)
    deleted = deleted + 1
  end
end
return deleted
`;

export interface Script {
  readonly lua: string;
  readonly sha: string;
  readonly keys: number;
}

function script(lua: string, keys: number): Script {
  return { lua, sha: createHash('sha1').update(lua).digest('hex'), keys };
}

export const SCRIPTS = {
  publish: script(PUBLISH, 2),
  read: script(READ, 1),
  ack: script(ACK, 1),
  retry: script(RETRY, 1),
  touch: script(TOUCH, 1),
  release: script(RELEASE, 1),
  heads: script(HEADS, 1),
  reclaim: script(RECLAIM, 1),
  prune: script(PRUNE, 1),
} as const;

const isNoScript = (error: unknown) => error instanceof Error && error.message.startsWith('NOSCRIPT');

/** Runs a script by its hash, sending its text when Redis does not have it (first use, or after a restart). */
export async function run(
  redis: Redis,
  s: Script,
  keys: readonly string[],
  args: ReadonlyArray<string | number | Buffer>,
): Promise<unknown> {
  try {
    return await redis.evalsha(s.sha, s.keys, ...keys, ...args);
  } catch (error) {
    if (!isNoScript(error)) throw error;
    return redis.eval(s.lua, s.keys, ...keys, ...args);
  }
}
