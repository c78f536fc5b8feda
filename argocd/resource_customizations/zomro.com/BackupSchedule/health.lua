-- Argo CD health check for zomro.com/BackupSchedule.
--   Healthy      Ready=True, reconciled at the current metadata.generation, and backups not
--                failing (BackupsHealthy True, or Unknown while the first run is not due yet)
--   Progressing  no status yet, status older than the spec, Ready Unknown, or creating/deleting
--   Degraded     Ready=False for a failure (bad credentials, missing instance, Zomro down, ...),
--                or BackupsHealthy=False (BackupFailed, BackupOverdue): Zomro holds the
--                schedule but its last expected run left no usable backup
--   Suspended    spec.suspend: true, or Ready reason Suspended
local hs = {}

local progressing_reasons = { Creating = true, Deleting = true }
local failing_backup_reasons = { BackupFailed = true, BackupOverdue = true }

local function current_generation_of(ready)
  local generation = obj.metadata and obj.metadata.generation
  local observed = ready.observedGeneration
  if observed == nil and obj.status ~= nil then
    observed = obj.status.observedGeneration
  end
  return generation == nil or (observed ~= nil and observed >= generation)
end

local function condition_of(kind)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, condition in ipairs(obj.status.conditions) do
    if condition.type == kind then
      return condition
    end
  end
  return nil
end

local function describe(ready, fallback)
  local text = ready.reason or fallback
  if ready.message ~= nil and ready.message ~= "" then
    text = text .. ": " .. ready.message
  end
  return text
end

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "Suspended: spec.suspend is true, the operator removes the Zomro schedule and keeps the resource"
  return hs
end

if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  -- Argo CD replaces the message of a terminating resource with "Pending deletion; blocked by
  -- finalizers: ..." unless the script sets deletionMessage.
  hs.status = "Progressing"
  hs.message = "Deleting: waiting for the operator to finish with the Zomro schedule"
  hs.deletionMessage = hs.message
  return hs
end

local ready = condition_of("Ready")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile"
  return hs
end

if not current_generation_of(ready) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile the latest spec"
  return hs
end

if ready.reason == "Suspended" then
  hs.status = "Suspended"
  hs.message = describe(ready, "Suspended")
  return hs
end

local backups = condition_of("BackupsHealthy")
if ready.status == "True" and backups ~= nil and backups.status == "False"
    and failing_backup_reasons[backups.reason or ""] then
  hs.status = "Degraded"
  hs.message = describe(backups, "BackupsUnhealthy")
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready, "Ready")
  return hs
end

if ready.status == "False" and not progressing_reasons[ready.reason or ""] then
  hs.status = "Degraded"
  hs.message = describe(ready, "NotReady")
  return hs
end

hs.status = "Progressing"
hs.message = describe(ready, "Reconciling")
return hs
