//! Drones and the pool of free drones, in Redis.
//!
//! A drone's state is a JSON document (`{p}:drone:{id}`, listed in
//! `{p}:drones`). The free ones are also in the pool, a geo set
//! (`{p}:drones:free`) at their positions, and in the pool of their payload
//! class (`{p}:drones:free:{small|medium|large}`), so the nearest free
//! drones of a class to a pickup are one `GEOSEARCH … ASC COUNT n`, and a
//! class with no free drone costs a claim nothing. Three Lua scripts keep
//! the pools' invariants where the data lives:
//!
//! - **claim** checks the delivery's fence (its partition's lease epoch),
//!   then returns the drone already claimed for the delivery
//!   (`{p}:delivery-drone:{id}`: a repeated request) or, if none, takes the
//!   free drone that can take the job (smallest class that carries the
//!   package first, then the nearest; see [`CLAIM`]) out of the pools, gives it a new claim number from
//!   `{p}:drone-claims` (kept in `{p}:drone-claim:{id}`) and stores it with
//!   the job, all in one step: two engines claiming at once get two
//!   different drones, and one delivery never gets two.
//! - **put** writes a claimed drone's progress only if the writer's claim
//!   number is the drone's current one and its fence is current; a free
//!   drone flying home moves in the pool with it (`GEOADD XX`).
//! - **release** checks the same, stores the freed drone, drops the
//!   delivery's index and puts the drone back in the pool at its position.
//!   Its claim number stays: the flight home writes with it until another
//!   claim takes the drone (a new number), which refuses those writes.
//!
//! The claim script sets the job's fields on the stored document with
//! `cjson` (numbers keep 14 significant digits: micrometres here), the same
//! fields [`DroneState::claimed`] sets, and takes only a drone that can take
//! the job (payload and battery, the rules of [`DroneState::can_take`]): the
//! nearest such one, reading the pool nearest first.

use ::redis::aio::ConnectionManager;
use ::redis::Script;
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use dronedelivery_actors::domain::limits::{pool_class, CLAIM_SCAN_MAX};
use dronedelivery_actors::domain::ownership::Fence;
use dronedelivery_actors::domain::{DroneRequest, DroneState};
use dronedelivery_actors::ports::{Claimed, DroneStore, StoreError, StoreResult};

use super::stores::{decode, encode, get_json, ping};
use super::{text, unavailable, Keys};

/// Lua prelude: returns 0 unless the fence `ARGV[1]` (an epoch, or '' for
/// none) matches the lease `KEYS[1]`.
const FENCE_CHECK: &str = r#"
if ARGV[1] ~= '' then
  local epoch = redis.call('HGET', KEYS[1], 'epoch')
  if not epoch or tonumber(epoch) ~= tonumber(ARGV[1]) then
    return {-1}
  end
end
"#;

/// KEYS lease, pool, delivery's drone, claim counter; ARGV epoch, lon, lat,
/// delivery id, ticket, pickup JSON, dropoff JSON, updatedAt, key prefix,
/// package size rank (0 small, 1 medium, 2 large), package weight, metres
/// from pickup to dropoff, now (epoch ms), dropoff lat, dropoff lon, the
/// most free drones to read.
/// Returns `{-1}` fenced, `{0}` no drone of a class that carries the size
/// is free, `{3}` some are but none can take the job, `{1, doc}` claimed
/// (or the delivery's drone, repeated), `{2, id}` the delivery's drone of
/// an older ticket still serves it.
///
/// The class pools (`{p}:drones:free:{class}`) are read from the smallest
/// class that carries the package's size up, each nearest first (16 at a
/// time, then four times as many, within 2 km of the pickup, then 16, 128
/// and any distance: a search reads only the geohash cells its radius
/// covers, so a dense pool costs a few cells, not every drone), and the
/// first drone that can take the
/// job is claimed: its weight limit holds the package and its battery,
/// charge included, the flight to the pickup, the dropoff and home (the
/// rules of `limits::choose` and `DroneState::can_take`, with the same
/// haversine). It leaves the class pool and the whole pool together.
const CLAIM: &str = r#"
local prefix = ARGV[9]
local id = redis.call('GET', KEYS[3])
if id then
  local raw = redis.call('GET', prefix .. ':drone:' .. id)
  if raw then
    local doc = cjson.decode(raw)
    if tonumber(doc['ticket'] or 0) >= tonumber(ARGV[5]) then
      return {1, raw}
    end
    return {2, id}
  end
  redis.call('DEL', KEYS[3])
end
local names = {'small', 'medium', 'large'}
local size, weight = tonumber(ARGV[10]), tonumber(ARGV[11])
local leg, now = tonumber(ARGV[12]), tonumber(ARGV[13])
local plat, plon = tonumber(ARGV[3]), tonumber(ARGV[2])
local dlat, dlon = tonumber(ARGV[14]), tonumber(ARGV[15])
local max = tonumber(ARGV[16])
local function distance(lat1, lon1, lat2, lon2)
  local r = math.pi / 180
  local dlat2 = (lat2 - lat1) * r / 2
  local dlon2 = (lon2 - lon1) * r / 2
  local a = math.sin(dlat2) ^ 2 + math.cos(lat1 * r) * math.cos(lat2 * r) * math.sin(dlon2) ^ 2
  return 2 * 6371008.8 * math.atan2(math.sqrt(a), math.sqrt(1 - a))
end
local function number(x)
  if type(x) == 'number' then return x end
  return nil
end
-- The battery's level at `now` (nil: no battery, unlimited).
local function level(b)
  if type(b) ~= 'table' or not number(b['levelM']) then return nil end
  local l = b['levelM']
  local since = number(b['chargingSinceMs'])
  if since then
    l = l + math.max(0, now - since) / 1000 * (number(b['rechargeMps']) or 0)
  end
  return math.max(0, math.min(l, number(b['capacityM']) or l))
end
local function can_take(doc)
  local p = doc['payload']
  if type(p) == 'table' then
    local limit = number(p['maxWeightKg'])
    if limit and weight > limit then return false end
  end
  local l = level(doc['battery'])
  if l then
    local pos, depot = doc['position'], doc['depot']
    local need = distance(pos['latitude'], pos['longitude'], plat, plon) + leg
      + distance(dlat, dlon, depot['latitude'], depot['longitude'])
    if need > l then return false end
  end
  return true
end
local scanned, any = 0, false
-- Rings of growing radius: a search looks only at the geohash cells that
-- cover its radius, so the nearest drones of a dense pool cost a few cells
-- rather than the whole pool. The order stays the nearest first overall:
-- a wider ring is read only once every drone of the narrower one was
-- checked (`checked` skips them the second time).
local radii = {2, 16, 128, 20040}
for c = size + 1, 3 do
  local pool = prefix .. ':drones:free:' .. names[c]
  local checked = {}
  for _, radius in ipairs(radii) do
    local count = 16
    while true do
      local found = redis.call('GEOSEARCH', pool, 'FROMLONLAT', ARGV[2], ARGV[3],
        'BYRADIUS', radius, 'km', 'ASC', 'COUNT', count)
      for _, candidate in ipairs(found) do
        if not checked[candidate] then
          checked[candidate] = true
          local raw = redis.call('GET', prefix .. ':drone:' .. candidate)
          if not raw then
            -- A pool member without a document (deleted by hand): dropped.
            redis.call('ZREM', pool, candidate)
            redis.call('ZREM', KEYS[2], candidate)
          else
            any = true
            if scanned >= max then
              return {3}
            end
            scanned = scanned + 1
            local doc = cjson.decode(raw)
            if can_take(doc) then
              redis.call('ZREM', pool, candidate)
              redis.call('ZREM', KEYS[2], candidate)
              local claim = redis.call('INCR', KEYS[4])
              doc['status'] = 'HeadedToPickup'
              doc['deliveryId'] = ARGV[4]
              doc['pickup'] = cjson.decode(ARGV[6])
              doc['dropoff'] = cjson.decode(ARGV[7])
              doc['ticket'] = tonumber(ARGV[5])
              doc['jobStartM'] = doc['flownM'] or 0
              doc['claim'] = claim
              doc['updatedAt'] = ARGV[8]
              local l = level(doc['battery'])
              if l then
                -- Takes off: the charge so far is kept, charging stops.
                doc['battery']['levelM'] = l
                doc['battery']['chargingSinceMs'] = nil
              end
              local out = cjson.encode(doc)
              redis.call('SET', prefix .. ':drone:' .. candidate, out)
              redis.call('SET', prefix .. ':drone-claim:' .. candidate, claim)
              redis.call('SET', KEYS[3], candidate)
              return {1, out}
            end
          end
        end
      end
      if #found < count then
        break
      end
      count = count * 4
    end
  end
end
if any then
  return {3}
end
return {0}
"#;

/// Lua prelude of put and release: KEYS lease, claim key; ARGV epoch,
/// claim. Refused (`{0}`) unless the claim is the drone's current one
/// (absent counts as 0: a drone stored by an earlier version).
const CLAIM_CHECK: &str = r#"
local held = redis.call('GET', KEYS[2]) or '0'
if held ~= ARGV[2] then
  return {0}
end
"#;

/// KEYS lease, claim key, doc, pool, class pool; ARGV epoch, claim, doc
/// JSON, lon, lat, drone id, `'1'` when the drone is free (in the pools).
const PUT: &str = r#"
redis.call('SET', KEYS[3], ARGV[3])
if ARGV[7] == '1' then
  redis.call('GEOADD', KEYS[4], 'XX', ARGV[4], ARGV[5], ARGV[6])
  redis.call('GEOADD', KEYS[5], 'XX', ARGV[4], ARGV[5], ARGV[6])
end
return {1}
"#;

/// KEYS lease, claim key, doc, pool, class pool, delivery's drone; ARGV
/// epoch, claim, doc JSON, lon, lat, drone id.
const RELEASE: &str = r#"
redis.call('SET', KEYS[3], ARGV[3])
if redis.call('GET', KEYS[6]) == ARGV[6] then
  redis.call('DEL', KEYS[6])
end
redis.call('GEOADD', KEYS[4], ARGV[4], ARGV[5], ARGV[6])
redis.call('GEOADD', KEYS[5], ARGV[4], ARGV[5], ARGV[6])
return {1}
"#;

/// KEYS drones, pool; ARGV prefix, then (id, doc JSON, lon, lat, class
/// pool key) for each drone to seed. Adds those not stored, to the pool and
/// their class pool; then puts back in both every stored free drone without
/// a claim that is missing from either (stored by an earlier version, which
/// had no class pools). Returns how many were added.
const SEED: &str = r#"
local prefix = ARGV[1]
local added = 0
for i = 2, #ARGV, 5 do
  local id = ARGV[i]
  local key = prefix .. ':drone:' .. id
  if redis.call('EXISTS', key) == 0 then
    redis.call('SET', key, ARGV[i + 1])
    redis.call('SADD', KEYS[1], id)
    redis.call('GEOADD', KEYS[2], ARGV[i + 2], ARGV[i + 3], id)
    redis.call('GEOADD', ARGV[i + 4], ARGV[i + 2], ARGV[i + 3], id)
    added = added + 1
  end
end
local names = {Small = 'small', Medium = 'medium', Large = 'large'}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', prefix .. ':drone-claim:' .. id) == 0 then
    local raw = redis.call('GET', prefix .. ':drone:' .. id)
    if raw then
      local doc = cjson.decode(raw)
      local class = 'large'
      if type(doc['payload']) == 'table' and names[doc['payload']['class']] then
        class = names[doc['payload']['class']]
      end
      local pool = prefix .. ':drones:free:' .. class
      local free = doc['status'] == 'Available' or doc['status'] == 'Returning'
      if free and type(doc['position']) == 'table'
        and (not redis.call('ZSCORE', KEYS[2], id) or not redis.call('ZSCORE', pool, id)) then
        local lon, lat = doc['position']['longitude'], doc['position']['latitude']
        redis.call('GEOADD', KEYS[2], lon, lat, id)
        redis.call('GEOADD', pool, lon, lat, id)
      end
    end
  end
end
return added
"#;

/// Drones and the pool (see the [module docs](self)).
#[derive(Clone)]
pub struct RedisDroneStore {
    conn: ConnectionManager,
    keys: Keys,
    claim: Script,
    put: Script,
    release: Script,
    seed: Script,
}

impl RedisDroneStore {
    pub(crate) fn new(conn: ConnectionManager, keys: Keys) -> Self {
        Self {
            conn,
            keys,
            claim: Script::new(&format!("{FENCE_CHECK}{CLAIM}")),
            put: Script::new(&format!("{FENCE_CHECK}{CLAIM_CHECK}{PUT}")),
            release: Script::new(&format!("{FENCE_CHECK}{CLAIM_CHECK}{RELEASE}")),
            seed: Script::new(SEED),
        }
    }

    /// The lease key and epoch argument of a fence (`''`: none).
    fn fence_args(&self, fence: Option<Fence>) -> (String, String) {
        match fence {
            Some(f) => (self.keys.lease(f.partition), f.epoch.to_string()),
            None => (self.keys.lease(0), String::new()),
        }
    }

    /// Runs put or release: true when applied.
    async fn checked(
        &self,
        script: &Script,
        drone: &DroneState,
        fence: Option<Fence>,
        extra_keys: &[String],
    ) -> StoreResult<bool> {
        let (lease, epoch) = self.fence_args(fence);
        let json = encode("drone", drone)?;
        let mut invocation = script.key(lease);
        invocation
            .key(self.keys.drone_claim(&drone.id))
            .key(self.keys.drone(&drone.id));
        for k in extra_keys {
            invocation.key(k);
        }
        invocation
            .arg(epoch)
            .arg(drone.claim)
            .arg(json)
            .arg(drone.position.longitude)
            .arg(drone.position.latitude)
            .arg(&drone.id)
            .arg(if drone.status.is_free() { "1" } else { "0" });
        let mut c = self.conn.clone();
        let reply: Vec<i64> = invocation.invoke_async(&mut c).await.map_err(unavailable)?;
        Ok(reply.first() == Some(&1))
    }
}

#[async_trait]
impl DroneStore for RedisDroneStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn get(&self, id: &str) -> StoreResult<Option<DroneState>> {
        get_json(&self.conn, &self.keys.drone(id)).await
    }

    async fn seed(&self, drones: &[DroneState]) -> StoreResult<usize> {
        let mut invocation = self.seed.key(self.keys.drones());
        invocation
            .key(self.keys.drones_free())
            .arg(self.keys.prefix());
        for d in drones {
            invocation
                .arg(&d.id)
                .arg(encode("drone", d)?)
                .arg(d.position.longitude)
                .arg(d.position.latitude)
                .arg(self.keys.drones_free_class(pool_class(d)));
        }
        let mut c = self.conn.clone();
        let added: i64 = invocation.invoke_async(&mut c).await.map_err(unavailable)?;
        Ok(usize::try_from(added).unwrap_or(0))
    }

    async fn claim(
        &self,
        job: &DroneRequest,
        fence: Option<Fence>,
        now: DateTime<Utc>,
    ) -> StoreResult<Claimed> {
        let (lease, epoch) = self.fence_args(fence);
        let location = |l| encode("location", &l);
        let mut invocation = self.claim.key(lease);
        invocation
            .key(self.keys.drones_free())
            .key(self.keys.delivery_drone(&job.delivery_id))
            .key(self.keys.drone_claims())
            .arg(epoch)
            .arg(job.pickup.longitude)
            .arg(job.pickup.latitude)
            .arg(&job.delivery_id)
            .arg(job.ticket)
            .arg(location(job.pickup)?)
            .arg(location(job.dropoff)?)
            .arg(now.to_rfc3339_opts(SecondsFormat::Millis, true))
            .arg(self.keys.prefix())
            .arg(job.package_size as u8)
            .arg(job.package_weight)
            .arg(job.pickup.distance_m(&job.dropoff))
            .arg(now.timestamp_millis())
            .arg(job.dropoff.latitude)
            .arg(job.dropoff.longitude)
            .arg(CLAIM_SCAN_MAX);
        let mut c = self.conn.clone();
        let reply: Vec<::redis::Value> =
            invocation.invoke_async(&mut c).await.map_err(unavailable)?;
        let code = match reply.first() {
            Some(::redis::Value::Int(n)) => *n,
            _ => i64::MIN,
        };
        match (code, reply.get(1).and_then(text)) {
            (-1, _) => Ok(Claimed::Fenced),
            (0, _) => Ok(Claimed::NoneFree),
            (1, Some(doc)) => Ok(Claimed::Drone(Box::new(decode("claimed drone", &doc)?))),
            (2, Some(id)) => Ok(Claimed::Busy(id)),
            (3, _) => Ok(Claimed::NoneFits),
            other => Err(StoreError::Unavailable(format!(
                "redis: unexpected claim reply {other:?}"
            ))),
        }
    }

    async fn put(&self, drone: &DroneState, fence: Option<Fence>) -> StoreResult<bool> {
        let pools = [
            self.keys.drones_free(),
            self.keys.drones_free_class(pool_class(drone)),
        ];
        self.checked(&self.put, drone, fence, &pools).await
    }

    async fn release(
        &self,
        drone: &DroneState,
        delivery_id: &str,
        fence: Option<Fence>,
    ) -> StoreResult<bool> {
        let delivery = self.keys.delivery_drone(delivery_id);
        self.checked(
            &self.release,
            drone,
            fence,
            &[
                self.keys.drones_free(),
                self.keys.drones_free_class(pool_class(drone)),
                delivery,
            ],
        )
        .await
    }

    async fn list(&self) -> StoreResult<Vec<DroneState>> {
        let mut c = self.conn.clone();
        let mut ids: Vec<String> = ::redis::cmd("SMEMBERS")
            .arg(self.keys.drones())
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        ids.sort();
        let keys: Vec<String> = ids.iter().map(|id| self.keys.drone(id)).collect();
        let docs: Vec<Option<String>> = ::redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        let mut drones = Vec::with_capacity(docs.len());
        for (key, doc) in keys.iter().zip(docs) {
            // A member without a document (deleted by hand) is skipped.
            if let Some(json) = doc {
                drones.push(decode::<DroneState>(key, &json)?);
            }
        }
        Ok(drones)
    }

    async fn counts(&self) -> StoreResult<(u64, u64)> {
        let mut c = self.conn.clone();
        ::redis::pipe()
            .cmd("SCARD")
            .arg(self.keys.drones())
            .cmd("ZCARD")
            .arg(self.keys.drones_free())
            .query_async(&mut c)
            .await
            .map_err(unavailable)
    }

    async fn ping(&self) -> StoreResult<()> {
        ping(&self.conn).await
    }
}
