# frozen_string_literal: true

# The benchmark's app, the same for every server: a small page, an upload
# endpoint that reads the whole body (so slow bodies reach it), and large
# bodies for slow readers (/1m, /8m).
require "digest"

PAGE = "Hello, world! #{'.' * 100}\n"
PIECE = "x" * 65_536

run lambda { |env|
  if (mib = env["PATH_INFO"][%r{\A/(\d+)m\z}, 1])
    body = Enumerator.new { |out| (Integer(mib) * 16).times { out << PIECE } }
    return [200, { "content-type" => "application/octet-stream", "content-length" => (Integer(mib) << 20).to_s }, body]
  end
  if env["PATH_INFO"] == "/work"
    # A request that takes the app a while (milliseconds in the query), and
    # says which host ran it (TEST_HOST, for the failover benchmark).
    sleep Integer(env["QUERY_STRING"]) / 1000.0
    return [200, { "content-type" => "text/plain" }, [ENV.fetch("TEST_HOST", "local")]]
  end
  if env["PATH_INFO"] == "/upload"
    digest = Digest::SHA256.new
    size = 0
    while (chunk = env["rack.input"].read(1 << 16))
      digest << chunk
      size += chunk.bytesize
    end
    [200, { "content-type" => "text/plain" }, ["#{size} #{digest.hexdigest}"]]
  else
    [200, { "content-type" => "text/plain", "content-length" => PAGE.bytesize.to_s }, [PAGE]]
  end
}
