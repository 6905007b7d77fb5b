-- Accepts one change to the shared topic tree: checks it against the stored state, numbers it,
-- appends it to the partition's log, changes the state and publishes it, all in one atomic
-- step (see docs/cluster.md). Every key and the channel share one hash tag.
--
-- KEYS: state hash, sequence counter, log stream, epoch, id of the last change
-- ARGV: op, channel, log length, publish command (PUBLISH or SPUBLISH), name (topic path or
--       view name), spec (add and set: type and properties; view: definition; remove: the
--       paths, a JSON array of strings), value, value mode (keep | set | clear), retained
--       (1 | 0), owner, body (the message after {"s":…,"e":"…","p":"…","i":"…","t":…,), a new
--       epoch (hex) in case the counter starts now, this change's id (hex)
-- Returns {'ok', seq}, or {'unchanged' | 'missing' | 'exists' | 'replaced', seq}: seq is the
-- partition's number after the call (a node waits until it has applied that far).
local state, seqkey, log, epochkey, lastkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local op, channel, loglen, publish = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local name, spec, value, mode, retained, owner, body =
  ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local function refuse(kind)
  return {kind, tonumber(redis.call('GET', seqkey) or '0')}
end

-- 1. Checks, reading only: a refused or unchanged change writes nothing.
local old
if op == 'add' or op == 'set' then
  old = redis.call('HGET', state, 's:' .. name)
  if not old and op == 'set' then return refuse('missing') end
  -- The value was checked against this type and these properties: a topic replaced meanwhile
  -- by another kind refuses it.
  if old and old ~= spec then return refuse(op == 'add' and 'exists' or 'replaced') end
  if old then
    -- Unchanged values are not sent again (a topic that does not retain its value has
    -- nothing to compare with: each of its values is delivered).
    if mode == 'keep' then return refuse('unchanged') end
    if retained == '1' then
      local current = redis.call('HGET', state, 'v:' .. name)
      if mode == 'set' and current == value then return refuse('unchanged') end
      if mode == 'clear' and not current then return refuse('unchanged') end
    end
  end
elseif op == 'remove' then
  local any = false
  for _, path in ipairs(cjson.decode(spec)) do
    if redis.call('HEXISTS', state, 's:' .. path) == 1 then any = true end
  end
  if not any then return refuse('unchanged') end
elseif op == 'view' then
  if redis.call('HGET', state, 'd:' .. name) == spec then return refuse('unchanged') end
elseif op == 'unview' then
  if redis.call('HEXISTS', state, 'd:' .. name) == 0 then return refuse('missing') end
else
  return redis.error_reply('unknown operation ' .. op)
end

-- 2. Number the change and log it. Should the log refuse it (its top entry is ahead of the
-- counter: someone changed the keys by hand), nothing but the counter has changed, and nodes
-- that find no entry under the new number reload the partition.
local t = 0
if op == 'add' or op == 'set' then
  t = tonumber(redis.call('HGET', state, 't:' .. name) or '0') + 1
end
local s = redis.call('INCR', seqkey)
-- A counter that starts (again) gets a new epoch, so nodes that applied an earlier counter's
-- changes see that these numbers are not a continuation.
local e = redis.call('GET', epochkey)
if s == 1 or not e then
  e = ARGV[12]
  redis.call('SET', epochkey, e)
end
-- Each change names the one before it, so a node that applied another history notices.
local prev = redis.call('GET', lastkey) or ''
local id = ARGV[13]
local message = '{"s":' .. string.format('%d', s) .. ',"e":"' .. e .. '","p":"' .. prev ..
  '","i":"' .. id .. '","t":' .. string.format('%d', t) .. ',' .. body
redis.call('XADD', log, 'MAXLEN', '~', loglen, string.format('%d', s) .. '-1', 'm', message)
redis.call('SET', lastkey, id)

-- 3. Store the new state, then tell every node.
if op == 'add' or op == 'set' then
  if not old then
    redis.call('HSET', state, 's:' .. name, spec)
    if owner ~= '' then redis.call('HSET', state, 'o:' .. name, owner) end
  end
  if mode == 'set' and retained == '1' then
    redis.call('HSET', state, 'v:' .. name, value)
  elseif mode == 'clear' then
    redis.call('HDEL', state, 'v:' .. name)
  end
  redis.call('HSET', state, 't:' .. name, t)
elseif op == 'remove' then
  for _, path in ipairs(cjson.decode(spec)) do
    redis.call('HDEL', state, 's:' .. path, 'v:' .. path, 'o:' .. path, 't:' .. path)
  end
elseif op == 'view' then
  redis.call('HSET', state, 'd:' .. name, spec)
  -- A view keeps the precedence of its first creation.
  redis.call('HSETNX', state, 'c:' .. name, s)
else
  redis.call('HDEL', state, 'd:' .. name, 'c:' .. name)
end
redis.call(publish, channel, message)
return {'ok', s}
