import { test } from 'node:test';
import assert from 'node:assert/strict';
import { findProtectorByName, parseDirStatus, protectorPath } from './fscrypt-cli.js';

// Output shapes captured from Debian's fscrypt 0.3.3.
const DIR_STATUS = `"/srv/mnt/a/data" is encrypted with fscrypt.

Policy:   a260bd3452d17d933706bb679fcaa4b3
Options:  padding:32 contents:AES_256_XTS filenames:AES_256_CTS policy_version:2 
Unlocked: Yes

Protected with 2 protectors:
PROTECTOR         LINKED  DESCRIPTION
8c7225905900d0eb  No      raw key protector "ocs-a"
647c7da6afefcd09  No      custom protector "ocs-rotate-1234"
`;

const FS_STATUS = `ext4 filesystem "/srv/mnt/a" has 2 protectors and 1 policy.
Only root can create fscrypt metadata on this filesystem.

PROTECTOR         LINKED  DESCRIPTION
647c7da6afefcd09  No      custom protector "ocs-rotate-1234"
8c7225905900d0eb  No      raw key protector "ocs-a"

POLICY                            UNLOCKED  PROTECTORS
a260bd3452d17d933706bb679fcaa4b3  Yes       8c7225905900d0eb, 647c7da6afefcd09
`;

test('fscrypt status of a directory: policy, version, lock state, protectors', () => {
  assert.deepEqual(parseDirStatus(DIR_STATUS), {
    policy: 'a260bd3452d17d933706bb679fcaa4b3',
    policyVersion: 2,
    unlocked: true,
    protectors: ['8c7225905900d0eb', '647c7da6afefcd09'],
  });
  assert.equal(parseDirStatus(DIR_STATUS.replace('Unlocked: Yes', 'Unlocked: No')).unlocked, false);
  assert.equal(
    parseDirStatus(DIR_STATUS.replace('Unlocked: Yes', 'Unlocked: Partially (incompletely locked)')).unlocked,
    true,
  );
  assert.throws(() => parseDirStatus('something else'), /unexpected output/);
});

test('fscrypt status of a filesystem: protectors found by exact name', () => {
  assert.equal(findProtectorByName(FS_STATUS, 'ocs-a'), '8c7225905900d0eb');
  assert.equal(findProtectorByName(FS_STATUS, 'ocs-rotate-1234'), '647c7da6afefcd09');
  assert.equal(findProtectorByName(FS_STATUS, 'ocs'), undefined);
});

test('protector paths accept only descriptors', () => {
  assert.equal(protectorPath('/m', '8c7225905900d0eb'), '/m/.fscrypt/protectors/8c7225905900d0eb');
  assert.throws(() => protectorPath('/m', '../../etc/passwd'));
});
