/** The domain XML built from a spec: what is in it, what never is, and that values are escaped. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildDomainXml, xmlEscape, type DomainPlan } from './domain-xml.js';
import { METADATA_NS } from './names.js';
import type { VmSpec } from './types.js';
import { readDomainFacts } from './xml-read.js';

const MiB = 1024 * 1024;

const spec = (extra: Partial<VmSpec> = {}): VmSpec => ({
  spaceId: 'sp_abc',
  vmId: 'vm_def',
  name: 'web.1',
  vcpus: 3,
  memoryBytes: 300 * MiB + 1000, // not a whole KiB: rounded down
  boot: { kind: 'kernel', kernel: "/s/it's <k>&", initrd: '/s/i', cmdline: `console=ttyS0 x="<a & 'b'>"` },
  consoleLogPath: '/s/console "log"',
  ...extra,
});

const plan = (s: VmSpec, extra: Partial<DomainPlan> = {}): DomainPlan => ({
  spec: s,
  accelerator: 'tcg',
  disks: [],
  staged: { kernel: '/run/stage/ocs-sp_abc-vm_def/kernel', initrd: '/run/stage/ocs-sp_abc-vm_def/initrd' },
  ...extra,
});

test('a kernel-boot domain: qemu type, KiB memory, vCPUs, staged boot files, file console, metadata', () => {
  const xml = buildDomainXml(plan(spec()));
  assert.match(xml, /^<domain type="qemu">/);
  assert.match(xml, /<name>ocs-sp_abc-vm_def<\/name>/);
  assert.match(xml, /<memory unit="KiB">307200<\/memory>/);
  assert.match(xml, /<vcpu placement="static">3<\/vcpu>/);
  assert.match(xml, /<type arch="x86_64" machine="pc">hvm<\/type>/);
  assert.match(xml, /<kernel>\/run\/stage\/ocs-sp_abc-vm_def\/kernel<\/kernel>/);
  assert.match(xml, /<cmdline>console=ttyS0 x=&quot;&lt;a &amp; &apos;b&apos;&gt;&quot;<\/cmdline>/);
  assert.match(
    xml,
    /<serial type="file"><source path="\/s\/console &quot;log&quot;"><\/source><target port="0"\/><\/serial>/,
  );
  assert.match(
    xml,
    /<console type="file"><source path="\/s\/console &quot;log&quot;"><\/source><target type="serial" port="0"\/><\/console>/,
  );
  assert.match(xml, /<controller type="usb" model="none"\/>/);
  assert.match(xml, /<memballoon model="none"\/>/);
  assert.match(xml, /<on_crash>preserve<\/on_crash>/);
  for (const banned of [
    '<graphics',
    '<video',
    '<interface',
    '<hostdev',
    '<filesystem',
    '<sound',
    '<channel',
    'pty',
    '<resource',
    '<seclabel',
  ]) {
    assert.ok(!xml.includes(banned), `no ${banned}`);
  }
  assert.ok(!xml.includes("it's <k>"), 'the source kernel path is only in escaped metadata');

  // What libvirt hands back is read back the same way.
  const facts = readDomainFacts(xml);
  assert.equal(facts.type, 'qemu');
  assert.deepEqual(facts.metadata, {
    space: 'sp_abc',
    vm: 'vm_def',
    name: 'web.1',
    kernel: "/s/it's <k>&",
    initrd: '/s/i',
  });
  assert.equal(facts.consolePath, '/s/console "log"');
  assert.deepEqual(facts.diskPaths, []);
  assert.match(xml, new RegExp(`xmlns:ocs="${METADATA_NS}"`));
});

test('disk boot, an extra disk, kvm, partition and runAsUid', () => {
  const s = spec({
    boot: { kind: 'disk', disk: '/s/boot.raw' },
    diskPath: '/s/data.qcow2',
    cgroupPartition: '/ocs.slice/sp_abc.space/vms.partition',
    runAsUid: 1234,
    storageRoot: '/s',
  });
  const xml = buildDomainXml(
    plan(s, {
      accelerator: 'kvm',
      staged: undefined,
      disks: [
        { path: '/s/boot.raw', format: 'raw' },
        { path: '/s/data.qcow2', format: 'qcow2' },
      ],
      qemuGid: 99,
    }),
  );
  assert.match(xml, /^<domain type="kvm">/);
  assert.match(xml, /<boot dev="hd"\/>/);
  assert.ok(!xml.includes('<kernel>'));
  assert.match(
    xml,
    /<driver name="qemu" type="raw"\/>\s*<source file="\/s\/boot.raw"><seclabel model="dac" relabel="no"\/><\/source>\s*<backingStore\/>\s*<target dev="vda" bus="virtio"\/>/,
  );
  assert.match(
    xml,
    /<driver name="qemu" type="qcow2"\/>\s*<source file="\/s\/data.qcow2">.*<\/source>\s*<backingStore\/>\s*<target dev="vdb"/,
  );
  assert.match(xml, /<resource><partition>\/ocs.slice\/sp_abc.space\/vms.partition<\/partition><\/resource>/);
  assert.match(xml, /<seclabel type="static" model="dac" relabel="yes">\s*<label>\+1234:\+99<\/label>/);
  assert.match(xml, /<serial type="file"><source path="[^"]*"><seclabel model="dac" relabel="no"\/><\/source>/);
  const facts = readDomainFacts(xml);
  assert.deepEqual(facts.diskPaths, ['/s/boot.raw', '/s/data.qcow2']);
  assert.equal(facts.partition, '/ocs.slice/sp_abc.space/vms.partition');
  assert.equal(facts.metadata?.storageRoot, '/s');
  assert.equal(facts.metadata?.kernel, undefined);
});

test('xmlEscape covers the five special characters', () => {
  assert.equal(xmlEscape(`<a href="x">'&'</a>`), '&lt;a href=&quot;x&quot;&gt;&apos;&amp;&apos;&lt;/a&gt;');
});

test('readDomainFacts reads libvirt-style single-quoted output and ignores foreign metadata', () => {
  const xml = `<domain type='qemu' id='7'>
  <metadata>
    <x:vm xmlns:x="urn:someone-else" space="sp_evil" vm="vm_x" name="n"/>
    <ocs:vm xmlns:ocs="${METADATA_NS}" space="sp_a" vm="vm_b" name="n&amp;m"/>
  </metadata>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/a/&apos;d'/><backingStore/><target dev='vda' bus='virtio'/></disk>
    <serial type='file'>
      <source path='/a/c.log'/>
      <target type='isa-serial' port='0'/>
    </serial>
  </devices>
</domain>`;
  const f = readDomainFacts(xml);
  assert.deepEqual(f.metadata, { space: 'sp_a', vm: 'vm_b', name: 'n&m' });
  assert.deepEqual(f.diskPaths, ["/a/'d"]);
  assert.equal(f.consolePath, '/a/c.log');
  assert.equal(f.type, 'qemu');
});

test("a VM with a network: one virtio NIC on the space's bridge, the bridge and gateway in the metadata", () => {
  const network = { bridge: 'ocsbr0123456789', mac: '52:54:00:80:00:2f', gateway: '10.128.0.1/26' };
  const xml = buildDomainXml(plan(spec({ network })));
  assert.equal(xml.match(/<interface /g)?.length, 1);
  assert.match(
    xml,
    /<interface type="bridge">\s*<mac address="52:54:00:80:00:2f"\/>\s*<source bridge="ocsbr0123456789"\/>\s*<model type="virtio"\/>\s*<\/interface>/,
  );
  assert.doesNotMatch(xml, /<filterref|type="network"|type="direct"|type="user"/);
  const facts = readDomainFacts(xml);
  assert.equal(facts.metadata?.bridge, 'ocsbr0123456789');
  assert.equal(facts.metadata?.gateway, '10.128.0.1/26');
});
