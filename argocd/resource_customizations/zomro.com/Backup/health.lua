-- Argo CD health check for zomro.com/Backup (a manual backup, taken once).
--   Healthy      phase Completed: the image is usable
--   Progressing  no status yet, Pending (also waiting for Zomro's daily limit), InProgress,
--                or deleting
--   Degraded     phase Failed, or Ready=False for a failure (bad credentials, missing instance,
--                Zomro down, ...), or a deletion held up by a protected image
local hs = {}

local progressing_reasons = { Creating = true, InProgress = true, DailyLimit = true, Deleting = true }

local function ready_condition()
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, condition in ipairs(obj.status.conditions) do
    if condition.type == "Ready" then
      return condition
    end
  end
  return nil
end

local function describe(ready, fallback)
  if ready == nil then
    return fallback
  end
  local text = ready.reason or fallback
  if ready.message ~= nil and ready.message ~= "" then
    text = text .. ": " .. ready.message
  end
  return text
end

local ready = ready_condition()
local phase = nil
if obj.status ~= nil then
  phase = obj.status.phase
end

if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  -- Argo CD replaces the message of a terminating resource with "Pending deletion; blocked by
  -- finalizers: ..." unless the script sets deletionMessage.
  if ready ~= nil and ready.reason == "Protected" then
    hs.status = "Degraded"
    hs.message = describe(ready, "Protected")
  else
    hs.status = "Progressing"
    hs.message = "Deleting: waiting for the operator to finish with the backup image"
  end
  hs.deletionMessage = hs.message
  return hs
end

if phase == "Completed" then
  hs.status = "Healthy"
  hs.message = describe(ready, "Completed")
  return hs
end

if phase == "Failed" then
  hs.status = "Degraded"
  hs.message = describe(ready, "Failed")
  return hs
end

if ready ~= nil and ready.status == "False" and not progressing_reasons[ready.reason or ""] then
  hs.status = "Degraded"
  hs.message = describe(ready, "NotReady")
  return hs
end

hs.status = "Progressing"
hs.message = describe(ready, "Waiting for the operator to take the backup")
return hs
