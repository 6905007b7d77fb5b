-- Accepts one change to the shared topic tree: checks it against the stored state, changes
-- the state, numbers the change, appends it to the partition's log and publishes it, all in
-- one atomic step (see docs/cluster.md). Every key and the channel share one hash tag.
--
-- KEYS: state hash, sequence counter, log stream, epoch
-- ARGV: op, channel, log length, publish command (PUBLISH or SPUBLISH), name (topic path or
--       view name), spec (add: type and properties; view: definition), value, value mode
--       (keep | set | clear), retained (1 | 0), owner, body (message after
--       {"s":…,"e":"…","t":…,), a new epoch (hex) in case the counter starts now
-- Returns {'ok', seq}, {'unchanged'}, {'missing'} or {'exists', stored spec}.
local state, seqkey, log, epochkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local op, channel, loglen, publish = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local name, spec, value, mode, retained, owner, body =
  ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local t = 0

if op == 'add' or op == 'set' then
  local old = redis.call('HGET', state, 's:' .. name)
  if not old and op == 'set' then return {'missing'} end
  if old and op == 'add' and old ~= spec then return {'exists', old} end
  if old then
    -- Unchanged values are not sent again (a topic that does not retain its value has
    -- nothing to compare with: each of its values is delivered).
    if mode == 'keep' then return {'unchanged'} end
    if retained == '1' then
      local current = redis.call('HGET', state, 'v:' .. name)
      if mode == 'set' and current == value then return {'unchanged'} end
      if mode == 'clear' and not current then return {'unchanged'} end
    end
  else
    redis.call('HSET', state, 's:' .. name, spec)
    if owner ~= '' then redis.call('HSET', state, 'o:' .. name, owner) end
  end
  if mode == 'set' and retained == '1' then
    redis.call('HSET', state, 'v:' .. name, value)
  elseif mode == 'clear' then
    redis.call('HDEL', state, 'v:' .. name)
  end
  t = redis.call('HINCRBY', state, 't:' .. name, 1)
elseif op == 'remove' then
  if redis.call('HDEL', state, 's:' .. name) == 0 then return {'unchanged'} end
  redis.call('HDEL', state, 'v:' .. name, 'o:' .. name, 't:' .. name)
elseif op == 'view' then
  if redis.call('HGET', state, 'd:' .. name) == spec then return {'unchanged'} end
  redis.call('HSET', state, 'd:' .. name, spec)
elseif op == 'unview' then
  if redis.call('HDEL', state, 'd:' .. name) == 0 then return {'missing'} end
  redis.call('HDEL', state, 'c:' .. name)
else
  return redis.error_reply('unknown operation ' .. op)
end

local s = redis.call('INCR', seqkey)
-- A counter that starts (again) gets a new epoch, so nodes that applied an earlier counter's
-- changes see that these numbers are not a continuation.
local e = redis.call('GET', epochkey)
if s == 1 or not e then
  e = ARGV[12]
  redis.call('SET', epochkey, e)
end
if op == 'view' then
  -- A view keeps the precedence of its first creation.
  redis.call('HSETNX', state, 'c:' .. name, s)
end
local message = '{"s":' .. s .. ',"e":"' .. e .. '","t":' .. t .. ',' .. body
redis.call('XADD', log, 'MAXLEN', '~', loglen, s .. '-1', 'm', message)
redis.call(publish, channel, message)
return {'ok', s}
