// mana-ai-grants.js — the browser reference client for mission key grants (protocol v2, docs/privacy.md).
//
// Runs with WebCrypto alone, from the web app's NON-extractable master key (AES-GCM, encrypt/decrypt):
//   issueGrant   draws a fresh random 32-byte grant data key, decrypts the granted records, the mission's own
//                encrypted text and the agent's persona with the master key, seals them under the data key
//                (AES-GCM, additional data = mission/table/record), wraps the data key for the runner with
//                RSA-OAEP-SHA256 — the grant's terms (mission, tables, record ids, issuedAt, expiresAt) as the
//                OAEP label, so an edited grant no longer unwraps — and stores grant and copies with
//                PUT /api/v1/me/missions/{id}/grant. Returns the grant for `mission.grant` (setMissionGrant).
//   refreshGrant re-seals the copies whose source changed (the data key comes back from the key box, which
//                only the master key opens) and removes those whose record is gone.
//   revokeGrant  DELETE /api/v1/me/missions/{id}/grant; the app then sets `mission.grant` to null.
//
// Records are passed as the app stores them: {table, id, record, fieldMeta}, encrypted fields in the
// `enc:1:<base64 iv>.<base64 ciphertext>` format of @mana/shared-crypto. Nothing here is kept between calls.

const ENC_PREFIX = 'enc:1:';
const LABEL_TAG = 'mana-ai-grant-v2';
const COPY_AAD_TAG = 'mana-ai-grant-copy-v2';
const MISSION_TABLE = 'aiMissions';
const MISSION_FIELDS = ['title', 'objective', 'conceptMarkdown'];
const AGENT_TABLE = 'agents';
const AGENT_FIELDS = ['systemPrompt', 'memory'];
const HOUR_MS = 3600 * 1000;
const MIN_TTL_MS = HOUR_MS;
const MAX_TTL_MS = 30 * 24 * HOUR_MS;
const DEFAULT_TTL_MS = 7 * 24 * HOUR_MS;
const MAX_RECORD_IDS = 1000;

export class GrantError extends Error {
	constructor(message, code, status) {
		super(message);
		this.name = 'GrantError';
		this.code = code ?? null;
		this.status = status ?? null;
	}
}

// --- encoding helpers (as @mana/shared-crypto) ---------------------------------------------------------

function bytesToBase64(bytes) {
	let bin = '';
	for (let i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
	return btoa(bin);
}

function base64ToBytes(b64) {
	const bin = atob(b64);
	const out = new Uint8Array(bin.length);
	for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
	return out;
}

const utf8 = (text) => new TextEncoder().encode(text);

export function isEncrypted(value) {
	return typeof value === 'string' && value.startsWith(ENC_PREFIX);
}

export async function unwrapValue(blob, key) {
	if (!isEncrypted(blob)) return blob;
	const body = blob.slice(ENC_PREFIX.length);
	const dot = body.indexOf('.');
	if (dot === -1) throw new GrantError('malformed encrypted blob (missing iv/ct separator)', 'MALFORMED');
	const iv = base64ToBytes(body.slice(0, dot));
	const ct = base64ToBytes(body.slice(dot + 1));
	const plain = await crypto.subtle.decrypt({ name: 'AES-GCM', iv }, key, ct);
	return JSON.parse(new TextDecoder().decode(plain));
}

export async function wrapValue(value, key) {
	if (value === null || value === undefined) return value;
	const iv = crypto.getRandomValues(new Uint8Array(12));
	const ct = await crypto.subtle.encrypt({ name: 'AES-GCM', iv }, key, utf8(JSON.stringify(value)));
	return ENC_PREFIX + bytesToBase64(iv) + '.' + bytesToBase64(new Uint8Array(ct));
}

// --- the protocol --------------------------------------------------------------------------------------

export function grantLabel(missionId, tables, recordIds, issuedAt, expiresAt) {
	return utf8(JSON.stringify([LABEL_TAG, missionId, tables, recordIds, issuedAt, expiresAt]));
}

function copyAad(missionId, table, recordId) {
	return utf8(JSON.stringify([COPY_AAD_TAG, missionId, table, recordId]));
}

function stampOf(meta) {
	if (typeof meta === 'string') return meta;
	if (meta && typeof meta.at === 'string') return meta.at;
	return '';
}

async function sealRecord(masterKey, dataKey, missionId, table, recordId, record, fieldMeta, only) {
	const fields = {};
	const stamps = {};
	for (const [name, value] of Object.entries(record ?? {})) {
		if (!isEncrypted(value) || (only && !only.includes(name))) continue;
		fields[name] = await unwrapValue(value, masterKey);
		stamps[name] = stampOf(fieldMeta?.[name]);
	}
	const iv = crypto.getRandomValues(new Uint8Array(12));
	const ct = await crypto.subtle.encrypt(
		{ name: 'AES-GCM', iv, additionalData: copyAad(missionId, table, recordId) },
		dataKey,
		utf8(JSON.stringify(fields))
	);
	const sealed = bytesToBase64(iv) + '.' + bytesToBase64(new Uint8Array(ct));
	return { table, recordId, sealed, sourceFieldMeta: stamps };
}

function hasEncrypted(record, only) {
	return Object.entries(record ?? {}).some(([k, v]) => isEncrypted(v) && (!only || only.includes(k)));
}

async function sealAll(masterKey, dataKey, missionId, mission, agent, records) {
	const copies = [];
	for (const r of records) {
		copies.push(await sealRecord(masterKey, dataKey, missionId, r.table, r.id, r.record, r.fieldMeta, null));
	}
	if (hasEncrypted(mission, MISSION_FIELDS)) {
		const meta = mission.__fieldMeta ?? mission.fieldMeta;
		copies.push(await sealRecord(masterKey, dataKey, missionId, MISSION_TABLE, missionId, mission, meta, MISSION_FIELDS));
	}
	if (agent && hasEncrypted(agent, AGENT_FIELDS)) {
		const meta = agent.__fieldMeta ?? agent.fieldMeta;
		copies.push(await sealRecord(masterKey, dataKey, missionId, AGENT_TABLE, agent.id, agent, meta, AGENT_FIELDS));
	}
	return copies;
}

// --- HTTP ----------------------------------------------------------------------------------------------

async function tokenOf(opts) {
	const token = typeof opts.getToken === 'function' ? await opts.getToken() : opts.token;
	if (!token) throw new GrantError('no auth token', 'NO_TOKEN');
	return token;
}

async function call(opts, method, path, body) {
	const base = String(opts.baseUrl ?? '').replace(/\/+$/, '');
	const headers = { Authorization: 'Bearer ' + (await tokenOf(opts)) };
	if (body !== undefined) headers['Content-Type'] = 'application/json';
	const res = await (opts.fetch ?? fetch)(base + path, {
		method,
		headers,
		body: body === undefined ? undefined : JSON.stringify(body)
	});
	if (res.status === 204) return null;
	const data = await res.json().catch(() => null);
	if (!res.ok) {
		throw new GrantError(`${method} ${path} failed: ${res.status} ${data?.error ?? ''}`, data?.code, res.status);
	}
	return data;
}

function pemToDer(pem) {
	return base64ToBytes(pem.replace(/-----(BEGIN|END) [^-]+-----/g, '').replace(/\s+/g, ''));
}

export async function fetchRunnerPublicKey(opts) {
	const base = String(opts.baseUrl ?? '').replace(/\/+$/, '');
	const res = await (opts.fetch ?? fetch)(base + '/api/v1/ai-runner-pubkey');
	if (!res.ok) throw new GrantError('mission grants are not configured on this runner', 'GRANT_NOT_CONFIGURED', res.status);
	const { publicKeyPem } = await res.json();
	return crypto.subtle.importKey('spki', pemToDer(publicKeyPem), { name: 'RSA-OAEP', hash: 'SHA-256' }, false, [
		'encrypt'
	]);
}

function missionPath(missionId) {
	return '/api/v1/me/missions/' + encodeURIComponent(missionId) + '/grant';
}

// --- public API ----------------------------------------------------------------------------------------

/**
 * Issue a grant for `records` of `mission` and store its sealed copies with the runner.
 * @param {{baseUrl: string, token?: string, getToken?: () => any, masterKey: CryptoKey,
 *          mission: object, agent?: object, records: {table: string, id: string, record: object,
 *          fieldMeta?: object}[], ttlMs?: number, now?: number}} opts
 * @returns {Promise<object>} the MissionGrant JSON to store on `mission.grant`.
 */
export async function issueGrant(opts) {
	const { masterKey, mission, agent = null, records } = opts;
	const missionId = mission?.id;
	if (typeof missionId !== 'string' || !missionId) throw new GrantError('mission.id is required', 'BAD_REQUEST');
	if (!Array.isArray(records) || records.length === 0) throw new GrantError('records must be non-empty', 'BAD_REQUEST');
	if (!masterKey) throw new GrantError('no master key (zero-knowledge vaults cannot grant)', 'ZK_ACTIVE');
	const recordIds = [...new Set(records.map((r) => `${r.table}:${r.id}`))].sort();
	if (recordIds.length > MAX_RECORD_IDS) throw new GrantError('recordIds must not exceed 1000 entries', 'BAD_REQUEST');
	const tables = [...new Set(records.map((r) => r.table))].sort();
	const ttl = Math.max(MIN_TTL_MS, Math.min(MAX_TTL_MS, opts.ttlMs ?? DEFAULT_TTL_MS));
	const now = opts.now ?? Date.now();
	const issuedAt = new Date(now).toISOString();
	const expiresAt = new Date(now + ttl).toISOString();

	const runnerKey = await fetchRunnerPublicKey(opts);
	const raw = crypto.getRandomValues(new Uint8Array(32));
	try {
		const label = grantLabel(missionId, tables, recordIds, issuedAt, expiresAt);
		const wrapped = await crypto.subtle.encrypt({ name: 'RSA-OAEP', label }, runnerKey, raw);
		const dataKey = await crypto.subtle.importKey('raw', raw, { name: 'AES-GCM' }, false, ['encrypt']);
		const keyBox = await wrapValue(bytesToBase64(raw), masterKey);
		const grant = {
			wrappedKey: bytesToBase64(new Uint8Array(wrapped)),
			derivation: { version: 'v2', missionId, tables, recordIds },
			issuedAt,
			expiresAt
		};
		const copies = await sealAll(masterKey, dataKey, missionId, mission, agent, records);
		await call(opts, 'PUT', missionPath(missionId), { grant, keyBox, copies });
		return grant;
	} finally {
		raw.fill(0);
	}
}

/**
 * Re-seal the copies of the mission's current grant whose source changed; remove those whose record is
 * gone. `records` is every granted record the app still has.
 * @returns {Promise<{updated: number, unchanged: number, removed: number}>}
 */
export async function refreshGrant(opts) {
	const { masterKey, mission, agent = null, records } = opts;
	const missionId = mission.id;
	const current = await call(opts, 'GET', missionPath(missionId));
	const boxed = await unwrapValue(current.keyBox, masterKey);
	const raw = base64ToBytes(boxed);
	let dataKey;
	try {
		dataKey = await crypto.subtle.importKey('raw', raw, { name: 'AES-GCM' }, false, ['encrypt']);
	} finally {
		raw.fill(0);
	}
	const allowed = new Set(current.grant.derivation.recordIds);
	const granted = records.filter((r) => allowed.has(`${r.table}:${r.id}`));
	const fresh = await sealAll(masterKey, dataKey, missionId, mission, agent, granted);
	const existing = new Map(current.copies.map((c) => [`${c.table}:${c.recordId}`, c]));
	const same = (a, b) =>
		JSON.stringify(Object.entries(a ?? {}).sort()) === JSON.stringify(Object.entries(b ?? {}).sort());
	const changed = fresh.filter((c) => {
		const old = existing.get(`${c.table}:${c.recordId}`);
		return !old || old.grantId !== current.grantId || !same(old.sourceFieldMeta, c.sourceFieldMeta);
	});
	const keep = new Set(fresh.map((c) => `${c.table}:${c.recordId}`));
	const removed = current.copies
		.filter((c) => !keep.has(`${c.table}:${c.recordId}`))
		.map((c) => ({ table: c.table, recordId: c.recordId }));
	await call(opts, 'PUT', missionPath(missionId) + '/copies', { grantId: current.grantId, copies: changed, removed });
	return { updated: changed.length, unchanged: fresh.length - changed.length, removed: removed.length };
}

/** Revoke: the runner deletes the grant and every copy. The app then sets `mission.grant = null`. */
export async function revokeGrant(opts) {
	await call(opts, 'DELETE', missionPath(opts.missionId));
	return true;
}
