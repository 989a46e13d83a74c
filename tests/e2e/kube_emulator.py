"""A stateful Kubernetes API emulator for tidegate's Kubernetes-mode tests (no real API server
can run on these machines). It is PyPI kmock 0.8's KubernetesEmulator (create/get/list/watch/
merge-patch/delete of declared resources) plus what kube-rs needs and kmock lacks:

- metadata.namespace from the URL; uid, creationTimestamp and generation on create; a growing
  resourceVersion on every write (kube-rs's watcher refuses lists without one);
- server-side apply (application/apply-patch+yaml): creates an absent object, merges into a
  present one (fields dropped from a later apply are NOT removed, unlike a real server);
- the scale subresource, answered as autoscaling/v1 Scale;
- deletion cascading to objects whose ownerReferences name the deleted uid (a stand-in for the
  garbage collector);
- Kubernetes' reason strings (NotFound, AlreadyExists), which kube-rs matches on;
- list items of built-in kinds without apiVersion and kind, as a real API server sends them.

Not emulated: selectors (label and field selectors are ignored: clients filter themselves),
resourceVersion conflicts, status/spec separation, admission, pruning, RBAC.

Usage: python3 kube_emulator.py PORT [group/version/plural | forbid:group/version/plural ...]
  Listed resources are left undeclared (their CRD "is not installed"); forbid: ones are answered
  403 Forbidden (an RBAC refusal). Prints "ready PORT".
"""
import asyncio, datetime, itertools, sys, uuid
import aiohttp.web, attrs, kmock
from kmock._internal import enums

_rv = itertools.count(1)
REASONS = {'Object Not Found': 'NotFound', 'Resource Not Found': 'NotFound', 'Not Found': 'NotFound',
           'Endpoint Not Found': 'NotFound', 'Object Already Exists': 'AlreadyExists'}
A = enums.action

def _path(resource):
    """`group/version/plural` (`v1/plural` for the core group), as RESOURCES names them."""
    parts = [resource.group, resource.version, resource.plural]
    return '/'.join(p for p in parts if p)

def _now():
    return datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')

@attrs.define(kw_only=True)
class Emulator(kmock.KubernetesEmulator):
    async def _handle(self, request):
        if request.resource is not None and _path(request.resource) in FORBIDDEN:
            return aiohttp.web.json_response(status=403, data={
                'apiVersion': 'v1', 'kind': 'Status', 'status': 'Failure', 'code': 403, 'reason': 'Forbidden',
                'message': f'{request.resource.plural} is forbidden: User "system:serviceaccount:tidegate-system:tidegate" '
                           f'cannot {str(request.method.value).lower()} resource "{request.resource.plural}"'})
        key = (request.resource, request.namespace, request.name)
        if request.resource is not None and request.subresource == 'scale':
            return await self._scale(request, key)
        if request.resource is not None and isinstance(request.data, dict):
            meta = request.data.setdefault('metadata', {})
            creating = request.action == A.CREATE
            ssa = request.headers.get('Content-Type', '').startswith('application/apply-patch')
            if request.action == A.UPDATE and ssa and (key not in self.objects or self.objects[key].deleted):
                meta.setdefault('name', request.name)
                creating = True
            if creating:
                if request.namespace:
                    meta.setdefault('namespace', request.namespace)
                meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
            if request.action in (A.CREATE, A.UPDATE):
                meta['resourceVersion'] = str(next(_rv))
            if creating and request.action == A.UPDATE:  # SSA of an absent object = create
                try:
                    return await super()._handle(attrs.evolve(request, action=A.CREATE))
                except NotImplementedError:  # stored and announced by the base class already
                    return aiohttp.web.json_response(self.objects[key].raw, status=201)
        uid = None
        if request.action == A.DELETE and key in self.objects and not self.objects[key].deleted:
            uid = self.objects[key].get('metadata', {}).get('uid')
        response = await super()._handle(request)
        if uid:
            await self._cascade(uid)
        return response

    async def _serve_list(self, request):
        # As a real API server: list items of built-in kinds carry no apiVersion and kind.
        payload = await super()._serve_list(request)
        if (request.resource.group or 'v1') in BUILT_IN_GROUPS:
            payload['items'] = [{k: v for k, v in item.items() if k not in ('apiVersion', 'kind')}
                                for item in payload['items']]
        return payload

    async def _scale(self, request, key):
        if key not in self.objects or self.objects[key].deleted:
            raise kmock.KubernetesObjectNotFoundError()
        if request.action == A.UPDATE:
            replicas = (request.data or {}).get('spec', {}).get('replicas')
            self.objects[key].patch({'spec': {'replicas': replicas},
                                     'metadata': {'resourceVersion': str(next(_rv))}})
            await self._buses[request.resource].put({'type': 'MODIFIED', 'object': self.objects[key].raw})
        obj = self.objects[key].raw
        return aiohttp.web.json_response({
            'apiVersion': 'autoscaling/v1', 'kind': 'Scale',
            'metadata': {k: obj['metadata'].get(k) for k in ('name', 'namespace', 'uid', 'resourceVersion')},
            'spec': {'replicas': obj.get('spec', {}).get('replicas', 0)},
            'status': {'replicas': obj.get('status', {}).get('replicas', 0)}})

    async def _cascade(self, owner_uid):
        for (res, ns, name), obj in list(self.objects.items()):
            if obj.deleted:
                continue
            refs = obj.get('metadata', {}).get('ownerReferences') or []
            if any(r.get('uid') == owner_uid for r in refs):
                raw = obj.raw
                obj.delete()
                await self._buses[res].put({'type': 'DELETED', 'object': raw})
                await self._cascade(raw.get('metadata', {}).get('uid'))

    async def _render_error(self, exc):
        if isinstance(exc, kmock.KubernetesError):
            exc = attrs.evolve(exc, reason=REASONS.get(exc.reason, exc.reason), details={'name': ''})
        return await super()._render_error(exc)

FORBIDDEN = set()  # resources answered 403 (an RBAC refusal), from "forbid:group/version/plural"

BUILT_IN_GROUPS = {'v1', 'apps', 'discovery.k8s.io', 'events.k8s.io'}

RESOURCES = {  # group/version/plural -> (kind, subresources); undeclared = "CRD not installed"
    'tidegate.dev/v1alpha1/triggers': ('Trigger', {'status'}),
    'eventing.knative.dev/v1/brokers': ('Broker', {'status'}),
    'eventing.knative.dev/v1/triggers': ('Trigger', {'status'}),
    'serving.knative.dev/v1/services': ('Service', {'status'}),
    'serving.knative.dev/v1/configurations': ('Configuration', {'status'}),
    'serving.knative.dev/v1/revisions': ('Revision', {'status'}),
    'serving.knative.dev/v1/routes': ('Route', {'status'}),
    'autoscaling.internal.knative.dev/v1alpha1/podautoscalers': ('PodAutoscaler', {'status'}),
    'networking.internal.knative.dev/v1alpha1/serverlessservices': ('ServerlessService', {'status'}),
    'apps/v1/deployments': ('Deployment', {'status', 'scale'}),
    'discovery.k8s.io/v1/endpointslices': ('EndpointSlice', set()),
    'v1/configmaps': ('ConfigMap', set()), 'v1/secrets': ('Secret', set()), 'v1/services': ('Service', set()),
    'events.k8s.io/v1/events': ('Event', set()),
}

async def main(port, omit=()):
    async with Emulator() as k, kmock.Server(k, host='127.0.0.1', port=port) as srv:
        for res, (kind, subs) in RESOURCES.items():
            if res not in omit:
                k.resources[res] = kmock.ResourceInfo(kind=kind, namespaced=True, subresources=subs,
                                                      verbs={'get', 'list', 'watch', 'create', 'patch', 'delete'})
        print(f'ready {srv.port}', flush=True)
        await asyncio.Event().wait()

if __name__ == '__main__':
    args = sys.argv[2:]
    FORBIDDEN.update(a.removeprefix('forbid:') for a in args if a.startswith('forbid:'))
    asyncio.run(main(int(sys.argv[1]), omit={a for a in args if not a.startswith('forbid:')}))
