import unittest

from rustworkers import ApiHandler, Request, Worker, _match_pattern, _parse_param, api


class ParseParamTest(unittest.TestCase):
    def test_plain(self):
        self.assertIsNone(_parse_param("users"))
        self.assertIsNone(_parse_param("user-{id}"))
        self.assertIsNone(_parse_param("{id}x"))

    def test_converters_are_builtins(self):
        self.assertEqual(_parse_param("{id}"), ("id", str))
        self.assertIs(_parse_param("{id:int}")[1], int)
        self.assertIs(_parse_param("{x:float}")[1], float)
        self.assertIs(_parse_param("{x:str}")[1], str)
        self.assertEqual(_parse_param("{}"), ("", str))

    def test_unknown_type(self):
        with self.assertRaisesRegex(ValueError, "Unknown type converter: uuid"):
            _parse_param("{id:uuid}")


class MatchPatternTest(unittest.TestCase):
    def test_empty_segments_dropped(self):
        for path in ("/users", "/users/", "users", "//users"):
            self.assertEqual(_match_pattern("/users", path), {}, path)
        self.assertEqual(_match_pattern("/", ""), {})
        self.assertEqual(_match_pattern("", "/"), {})

    def test_params(self):
        self.assertEqual(_match_pattern("/u/{id:int}", "/u/42"), {"id": 42})
        self.assertEqual(_match_pattern("/u/{id:int}", "/u/+5"), {"id": 5})
        self.assertEqual(_match_pattern("/u/{id:int}", "/u/1_000"), {"id": 1000})
        self.assertEqual(_match_pattern("/u/{id:int}", "/u/٣"), {"id": 3})
        self.assertIsNone(_match_pattern("/u/{id:int}", "/u/x"))
        self.assertEqual(_match_pattern("/f/{v:float}", "/f/10"), {"v": 10.0})
        self.assertEqual(_match_pattern("/f/{v:float}", "/f/1e3"), {"v": 1000.0})
        self.assertEqual(_match_pattern("/f/{v:float}", "/f/inf"), {"v": float("inf")})
        self.assertEqual(_match_pattern("/a/{n}/b", "/a/x/b"), {"n": "x"})

    def test_segment_count_and_literals(self):
        self.assertIsNone(_match_pattern("/a/{n}", "/a"))
        self.assertIsNone(_match_pattern("/a/{n}", "/a/b/c"))
        self.assertIsNone(_match_pattern("/a/*", "/a/b"))
        self.assertEqual(_match_pattern("/a/*", "/a/*"), {})
        self.assertIsNone(_match_pattern("/A", "/a"))


class ApiDecoratorTest(unittest.TestCase):
    def test_same_function_and_attrs(self):
        def f(self, request):
            pass
        g = api("/x", "GET", "POST")(f)
        self.assertIs(g, f)
        self.assertEqual(f._api_pattern, "/x")
        self.assertEqual(f._api_methods, ["GET", "POST"])
        self.assertIsNone(api("/y")(lambda s, r: None)._api_methods)

    def test_list_argument_accepted(self):  # QUIRK 10 fixed
        f = api("/x", ["GET", "POST"])(lambda s, r: None)
        self.assertEqual(f._api_methods, ["GET", "POST"])


class Base(Worker):
    @api("/item/{name}", "GET")
    def by_name(self, request):
        return "name"

    @api("/item/new", "GET")
    def new(self, request):
        return "new"

    @api("/items", "GET")
    def list(self, request):
        return "list"

    @api("/items", "POST")
    def create(self, request):
        return "create"


class Override(Base):
    def new(self, request):  # not re-decorated: keeps the base route
        return "override-new"

    @api("/other", "GET")
    def list(self, request):  # re-decorated: both patterns served by the override
        return "override-list"


class UserHandler(ApiHandler):
    PATTERN = "/api/user/"

    def __init__(self, worker):
        super().__init__(worker)
        self.made = True

    @api("", "GET")
    def index(self, request):
        return "user-index"

    @api("/{id:int}", "GET")
    def one(self, request):
        return request.path_params["id"]


class AdminHandler(UserHandler):
    PATTERN = "/api/admin"


class WithHandlers(Worker):
    HANDLERS = [UserHandler, AdminHandler]

    @api("/own")
    def own(self, request):
        return "own"


def call(worker, method, path):
    return worker._handle_request(Request(1, method, path))


class RouteTableTest(unittest.TestCase):
    def test_first_match_wins(self):
        w = Base(0, None, None, None)
        w._build_routes()
        self.assertEqual(len(w._routes), 4)
        self.assertEqual(call(w, "GET", "/item/new").data, "name")

    def test_override_keeps_and_adds_routes(self):
        w = Override(0, None, None, None)
        w._build_routes()
        patterns = [r[0] for r in w._routes]
        self.assertIn("/other", patterns)
        self.assertIn("/items", patterns)
        self.assertEqual(call(w, "GET", "/other").data, "override-list")
        self.assertEqual(call(w, "GET", "/items").data, "override-list")

    def test_handlers(self):
        w = WithHandlers(3, None, None, None)
        w._build_routes()
        self.assertEqual([r[0] for r in w._routes],
                         ["/own", "/api/user", "/api/user/{id:int}", "/api/admin",
                          "/api/admin/{id:int}"])
        self.assertEqual(len(w._handlers), 2)
        self.assertTrue(all(h.worker is w and h.made for h in w._handlers))
        self.assertEqual(call(w, "GET", "/api/user").data, "user-index")
        self.assertEqual(call(w, "GET", "/api/admin/7").data, 7)
        self.assertEqual(call(w, "DELETE", "/own").data, "own")  # no methods = all

    def test_match_route_sets_params(self):
        w = WithHandlers(0, None, None, None)
        w._build_routes()
        req = Request(1, "GET", "/api/user/9")
        handler = w._match_route(req)
        self.assertEqual(handler(req), 9)
        self.assertEqual(req.path_params, {"id": 9})
        miss = Request(1, "GET", "/nope")
        self.assertIsNone(w._match_route(miss))
        self.assertEqual(miss.path_params, {})

    def test_404_and_405(self):
        w = Base(0, None, None, None)
        w._build_routes()
        r = call(w, "GET", "/zzz")
        self.assertEqual((r.status, r.data, r.headers), (404, {"error": "Not found"}, None))
        r = call(w, "PUT", "/items")
        self.assertEqual(r.status, 405)
        self.assertEqual(r.data, {"error": "Method not allowed"})
        self.assertEqual(r.headers, {"Allow": "GET, POST"})  # QUIRK 1: union
        self.assertEqual(call(w, "HEAD", "/items").status, 405)  # no HEAD->GET mapping

    def test_unknown_converter_fails_at_build(self):  # QUIRK 2
        class Bad(Worker):
            @api("/x/{id:uuid}")
            def x(self, request):
                pass
        with self.assertRaises(ValueError):
            Bad(0, None, None, None)._build_routes()


if __name__ == "__main__":
    unittest.main()
